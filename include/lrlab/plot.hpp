// Self-contained SVG line plots (no scripts, no external resources) for schedule curves, training
// reports and sweep reports.
#pragma once

#include <string>
#include <vector>

namespace lrlab {

// How a series' points are drawn: joined in order by a line, or each as a marker of a shape (a
// cross is never filled).
enum class Mark { line, circle, diamond, triangle, cross };

struct Series {
  std::string name;  // shown in the legend; series without a name are left out of it
  std::vector<double> x, y;
  Mark mark = Mark::line;
  bool filled = true;  // markers: filled, or outlined
  // An SVG colour; empty: plot_colour of the series' position in the list. Markers that annotate a
  // curve take the curve's colour, so the two read as one.
  std::string colour = "";
};

// The colour a series at position i gets by default.
std::string plot_colour(size_t i);

struct PlotOptions {
  std::string title, xlabel, ylabel;
  bool log_x = false, log_y = false;
  int width = 720, height = 420;
};

// Text made safe for XML and HTML: the five entities escaped; control characters, and bytes that
// are not printable UTF-8, become '?'.
std::string xml_escape(const std::string& text);

// Axes with labelled ticks, a legend and one colour per series. Log axes tick at powers of ten,
// and where the data spans less than two decades at 1, 2 and 5 times them instead (or at every
// multiple, where that gives fewer than four), ending at the ticks around the data. The legend goes
// in the corner of the plot area where it hides the least of the data.
// Non-finite points (and non-positive ones on a log axis) are skipped and break the line, except a
// marker at y = +infinity: it is drawn on the top edge, with room left between it and the data,
// for a value off the scale (a run that diverged). Empty input still gives a valid SVG. Dense series are thinned to a few points per
// pixel column, keeping each column's extremes. Throws lrlab::Error when a series' x and y differ
// in length or the size is outside [160, 16000] x [120, 16000].
std::string svg_line_plot(const std::vector<Series>& series, const PlotOptions& options);

}  // namespace lrlab
