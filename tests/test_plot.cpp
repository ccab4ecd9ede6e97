// SVG line plots: well-formed, self-contained, with ticks, legend and colours; odd data is handled.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "lrlab/error.hpp"
#include "lrlab/plot.hpp"

namespace lrlab {
namespace {

// A small well-formedness check: every tag closes in order, and no raw '&' or '<' sits in text.
bool well_formed(const std::string& svg, std::string* why) {
  std::vector<std::string> open;
  size_t i = 0;
  while ((i = svg.find('<', i)) != std::string::npos) {
    size_t end = svg.find('>', i);
    if (end == std::string::npos) return *why = "unterminated tag", false;
    std::string tag = svg.substr(i + 1, end - i - 1);
    if (tag.find('<') != std::string::npos) return *why = "'<' inside a tag", false;
    std::string name = tag.substr(tag[0] == '/' ? 1 : 0, tag.find_first_of(" />", 1) - (tag[0] == '/' ? 1 : 0));
    if (tag[0] == '/') {
      if (open.empty() || open.back() != name) return *why = "mismatched </" + name + ">", false;
      open.pop_back();
    } else if (tag.back() != '/') {
      open.push_back(name);
    }
    i = end + 1;
    size_t next = svg.find('<', i);
    std::string text = svg.substr(i, next == std::string::npos ? std::string::npos : next - i);
    for (size_t a = text.find('&'); a != std::string::npos; a = text.find('&', a + 1))
      if (!std::regex_search(text.substr(a), std::regex("^&(amp|lt|gt|quot|apos);")))
        return *why = "raw '&' in text", false;
  }
  if (!open.empty()) return *why = "unclosed <" + open.back() + ">", false;
  return true;
}

void expect_valid(const std::string& svg) {
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  std::string why;
  EXPECT_TRUE(well_formed(svg, &why)) << why;
  // Self-contained: nothing to run and nothing to fetch.
  EXPECT_EQ(svg.find("<script"), std::string::npos);
  EXPECT_EQ(svg.find("href"), std::string::npos);
  EXPECT_EQ(svg.find("url("), std::string::npos);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
}

std::vector<std::string> all(const std::string& s, const std::string& pattern) {
  std::vector<std::string> out;
  std::regex re(pattern);
  for (auto it = std::sregex_iterator(s.begin(), s.end(), re); it != std::sregex_iterator(); ++it)
    out.push_back((*it)[1]);
  return out;
}

std::vector<std::string> text_labels(const std::string& svg) { return all(svg, "<text[^>]*>([^<]*)</text>"); }

bool has(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

Series ramp(const std::string& name, int n, double scale) {
  Series s;
  s.name = name;
  for (int i = 0; i < n; ++i) s.x.push_back(i), s.y.push_back(scale * i);
  return s;
}

TEST(PlotSvg, AxesTicksTitleLabelsAndLegend) {
  PlotOptions o;
  o.title = "loss <train> & \"val\"";
  o.xlabel = "step";
  o.ylabel = "lr";
  std::string svg = svg_line_plot({ramp("a", 11, 0.1), ramp("b's", 11, 0.05)}, o);
  expect_valid(svg);
  std::vector<std::string> labels = text_labels(svg);
  EXPECT_TRUE(has(labels, "loss &lt;train&gt; &amp; &quot;val&quot;"));
  EXPECT_TRUE(has(labels, "step"));
  EXPECT_TRUE(has(labels, "lr"));
  EXPECT_TRUE(has(labels, "a"));
  EXPECT_TRUE(has(labels, "b&apos;s"));
  for (const char* tick : {"0", "0.2", "0.4", "0.6", "0.8", "1", "2", "4", "10"})
    EXPECT_TRUE(has(labels, tick)) << tick;
  EXPECT_EQ(all(svg, "(<polyline)").size(), 2u);
}

TEST(PlotSvg, DistinctColoursPerSeries) {
  std::vector<Series> many;
  for (int i = 0; i < 14; ++i) many.push_back(ramp("s" + std::to_string(i), 5, i + 1));
  std::string svg = svg_line_plot(many, PlotOptions{});
  expect_valid(svg);
  std::vector<std::string> colours = all(svg, "<polyline fill=\"none\" stroke=\"([^\"]+)\"");
  ASSERT_EQ(colours.size(), 14u);
  EXPECT_EQ(std::set<std::string>(colours.begin(), colours.end()).size(), 14u);
}

TEST(PlotSvg, LogAxesTickAtPowersOfTen) {
  Series s;
  s.name = "lr";
  for (int i = 0; i <= 40; ++i) s.x.push_back(1 + i), s.y.push_back(std::pow(10.0, -3 + i / 10.0));
  PlotOptions o;
  o.log_y = true;
  o.log_x = true;
  std::string svg = svg_line_plot({s}, o);
  expect_valid(svg);
  std::vector<std::string> labels = text_labels(svg);
  // y spans four decades: powers of ten only.
  for (const char* tick : {"0.001", "0.01", "0.1", "1", "10"}) EXPECT_TRUE(has(labels, tick)) << tick;
  EXPECT_FALSE(has(labels, "0.5"));
  EXPECT_FALSE(has(labels, "0.002"));
  // x, 1 to 41, spans less than two: 1, 2 and 5 times them, ending at the first tick past 41.
  for (const char* tick : {"2", "5", "20", "50"}) EXPECT_TRUE(has(labels, tick)) << tick;
  EXPECT_FALSE(has(labels, "100"));
  EXPECT_FALSE(has(labels, "3"));

  Series wide;
  wide.x = {1, 2};
  wide.y = {1e-12, 1e12};
  std::vector<std::string> wide_labels = text_labels(svg_line_plot({wide}, o));
  // Beyond everyday magnitudes, powers of ten, and then every label of the axis is one.
  EXPECT_TRUE(has(wide_labels, "10⁻¹²"));
  EXPECT_TRUE(has(wide_labels, "10¹²"));
  EXPECT_TRUE(has(wide_labels, "10⁰"));
  EXPECT_FALSE(has(wide_labels, "1e-12"));
}

// A validation loss between 0.3 and 0.65 on a log axis got only the labels 0.1 and 1, with the
// curves squeezed into the middle of the plot.
TEST(PlotSvg, NarrowLogRangesTickBetweenPowersOfTen) {
  Series s;
  s.name = "val";
  s.x = {1, 2, 3};
  s.y = {0.65, 0.42, 0.3};
  PlotOptions o;
  o.log_y = true;
  std::string svg = svg_line_plot({s}, o);
  expect_valid(svg);
  std::vector<std::string> labels = text_labels(svg);
  for (const char* tick : {"0.3", "0.4", "0.5", "0.6", "0.7"}) EXPECT_TRUE(has(labels, tick)) << tick;
  EXPECT_FALSE(has(labels, "0.1"));
  EXPECT_FALSE(has(labels, "0.8"));
  // The axis ends at the ticks around the data: the lowest point sits on the bottom edge.
  const std::vector<std::string> pts = all(svg, "points=\"([^\"]*)\"");
  ASSERT_EQ(pts.size(), 1u);
  const double bottom = o.height - 48.0;
  EXPECT_NEAR(std::stod(pts[0].substr(pts[0].rfind(',') + 1)), bottom, 0.01) << pts[0];

  // Over two decades, 1, 2 and 5 times powers of ten; the ticks reach 10^6, so all of them read
  // as powers of ten, none as a plain number beside them ("500000" next to "1e6" was hard to read).
  Series wide;
  wide.x = {1, 2};
  wide.y = {1.5e5, 9e6};
  labels = text_labels(svg_line_plot({wide}, o));
  for (const char* tick : {"10⁵", "2×10⁵", "5×10⁵", "10⁶", "2×10⁶", "5×10⁶", "10⁷"})
    EXPECT_TRUE(has(labels, tick)) << tick;
  EXPECT_FALSE(has(labels, "3×10⁶"));
  EXPECT_FALSE(has(labels, "100000"));

  // One value, or two a rounding apart, still get an axis of two distinct ticks.
  for (double v : {0.5, 0.3, 1.0, 1e-300, 4.9e-324}) {
    Series flat;
    flat.x = {0, 1};
    flat.y = {v, std::nextafter(v, 1.0)};
    const std::string one = svg_line_plot({flat}, o);
    expect_valid(one);
    EXPECT_GE(text_labels(one).size(), 4u) << v;  // two ticks on each axis
    // Inside the frame (16 to 372 px), subnormal values too: the axis reaches below them.
    for (const std::string& p : all(one, "points=\"([^\"]*)\"")) {
      std::istringstream xy(p);
      double px, py;
      char comma;
      while (xy >> px >> comma >> py) {
        EXPECT_GE(py, 16 - 0.01) << v << ": " << p;
        EXPECT_LE(py, 372 + 0.01) << v << ": " << p;
      }
    }
  }
}

// The legend box's top-left corner.
std::pair<double, double> legend_at(const std::string& svg) {
  std::smatch m;
  const std::regex re("<g class=\"legend\">\n<rect x=\"([0-9.]+)\" y=\"([0-9.]+)\"");
  if (!std::regex_search(svg, m, re)) return {-1, -1};
  return {std::stod(m[1]), std::stod(m[2])};
}

// The legend sat in the top-right corner whatever lay there; a learning rate held constant at the
// top of its plot ran hidden behind it.
TEST(PlotSvg, LegendGoesToTheCornerThatHidesTheLeast) {
  PlotOptions o;  // 720 x 420
  // The axes run from 0 to 10, and the legend stands off the frame: the lines at 9.5 and 0.5 pass
  // where it would be.
  Series top{"along the top", {0, 10}, {9.5, 9.5}};
  Series low_right{"low right", {5, 10}, {0.5, 0.5}};
  Series frame{"", {0, 10}, {0, 10}, Mark::circle};  // unnamed: sets the axes, not in the legend
  auto [x, y] = legend_at(svg_line_plot({top, low_right, frame}, o));
  EXPECT_LT(x, 360) << "left";
  EXPECT_GT(y, 210) << "bottom";

  // Where two corners are free: the top right before the top left, before the bottom right.
  Series falling{"falling", {0, 10}, {10, 0}};
  std::tie(x, y) = legend_at(svg_line_plot({falling}, o));
  EXPECT_GT(x, 360);
  EXPECT_LT(y, 210);
  Series rising{"rising", {0, 10}, {0, 10}};
  std::tie(x, y) = legend_at(svg_line_plot({rising}, o));
  EXPECT_LT(x, 360) << "left";
  EXPECT_LT(y, 210) << "top";

  // Markers count too: a cloud of them in the top right sends the legend elsewhere.
  Series cloud{"cloud", {}, {}, Mark::circle};
  for (int i = 0; i < 20; ++i) cloud.x.push_back(9 + 0.05 * i), cloud.y.push_back(9.2 + 0.1 * (i % 7));
  std::tie(x, y) = legend_at(svg_line_plot({cloud, frame}, o));
  EXPECT_FALSE(x > 360 && y < 210) << "legend over the markers at " << x << "," << y;
}

TEST(PlotSvg, MarkerSeriesTakeTheirShapeFillAndColour) {
  Series curve{"curve", {1, 2, 3}, {3, 2, 1}};
  Series hollow{"hollow diamond", {2}, {2}, Mark::diamond, false, plot_colour(0)};
  Series solid{"solid triangle", {3}, {1}, Mark::triangle, true, plot_colour(0)};
  Series dot{"own colour", {1}, {3}, Mark::circle};
  const std::string svg = svg_line_plot({curve, hollow, solid, dot}, PlotOptions{});
  expect_valid(svg);
  EXPECT_EQ(all(svg, "(<polyline)").size(), 1u) << "markers are not joined";
  // Each marker once on the plot and once in the legend.
  const std::vector<std::string> polygons = all(svg, "<polygon points=\"[^\"]*\"( fill=\"[^\"]*\" stroke=\"[^\"]*\")");
  ASSERT_EQ(polygons.size(), 4u);
  EXPECT_EQ(std::count(polygons.begin(), polygons.end(), " fill=\"white\" stroke=\"#4e79a7\""), 2);
  EXPECT_EQ(std::count(polygons.begin(), polygons.end(), " fill=\"#4e79a7\" stroke=\"#4e79a7\""), 2);
  // The diamond has four corners, the triangle three.
  for (const std::string& p : all(svg, "<polygon points=\"([^\"]*)\" fill=\"white\""))
    EXPECT_EQ(std::count(p.begin(), p.end(), ','), 4) << p;
  for (const std::string& p : all(svg, "<polygon points=\"([^\"]*)\" fill=\"#4e79a7\""))
    EXPECT_EQ(std::count(p.begin(), p.end(), ','), 3) << p;
  // A marker series without a colour takes its own position's (the fourth).
  EXPECT_EQ(all(svg, "(<circle [^>]*fill=\"#76b7b2\" stroke=\"#76b7b2\")").size(), 2u);

  // A cross is two strokes through the point, never filled; any SVG colour can be given.
  Series cross{"failed", {2}, {2}, Mark::cross, true, "#555555"};
  const std::string with_cross = svg_line_plot({curve, cross}, PlotOptions{});
  expect_valid(with_cross);
  const std::vector<std::string> paths = all(with_cross, "(<path d=\"M[^\"]*\" fill=\"none\" stroke=\"#555555\")");
  EXPECT_EQ(paths.size(), 2u);  // on the plot and in the legend
}

// A value off the scale (a run that diverged has no loss) is a marker at y = +inf: on the top edge,
// widening the x axis to reach it but leaving the y axis to the data.
TEST(PlotSvg, MarkersAtInfinityStandOnTheTopEdge) {
  Series curve{"loss", {1e-3, 1e-2}, {0.5, 0.3}};
  Series off{"diverged", {1e-1, 1.0}, {INFINITY, INFINITY}, Mark::cross};
  PlotOptions o;  // 720 x 420: the plot area runs from x 72 to 696, y 16 to 372 (no title)
  o.log_x = true;
  const std::string svg = svg_line_plot({curve, off}, o);
  expect_valid(svg);
  const std::vector<std::string> at = all(svg, "<path d=\"M([0-9.]+,[0-9.]+) ");
  ASSERT_EQ(at.size(), 3u);  // two on the plot, one in the legend
  // The x axis runs from 1e-3 to 1: 1e-1's cross is drawn from 4.5 px left of and above
  // (72 + 624 x 2/3, 16), the top edge.
  EXPECT_EQ(at[0], "483.50,11.50");
  std::vector<std::string> labels = text_labels(svg);
  EXPECT_NE(svg.find(">1</text>"), std::string::npos) << "the x axis reaches the crosses";
  EXPECT_FALSE(has(labels, "10"));
  // The y axis is the line's, 0.3 to 0.5, with room above: the line's highest point (0.5, which
  // would otherwise be the top tick) stays below the crosses.
  EXPECT_TRUE(has(labels, "0.3"));
  EXPECT_TRUE(has(labels, "0.5"));
  const std::vector<std::string> pts = all(svg, "points=\"([^\"]*)\"");
  ASSERT_EQ(pts.size(), 1u);
  const double highest = std::stod(pts[0].substr(pts[0].find(',') + 1));
  EXPECT_GT(highest, 16 + 20) << pts[0];
  // A line at +inf is still skipped, as is a marker at -inf or NaN.
  Series line_off{"line", {1, 2}, {INFINITY, INFINITY}};
  Series nan_marker{"not a number", {1, 2}, {-INFINITY, NAN}, Mark::circle};
  const std::string skipped = svg_line_plot({line_off, nan_marker}, PlotOptions{});
  expect_valid(skipped);
  EXPECT_NE(skipped.find("no data"), std::string::npos);
}

// Two decades or more tick at powers of ten alone: 1 to 100 gets 1, 10 and 100, not 2 and 5 times
// them. Where the decades reach below 10^-4, %g would write "1e-05" beside "0.0001": every label of
// the axis is then a power of ten.
TEST(PlotSvg, TwoDecadesTickAtPowersOfTenInOneStyle) {
  PlotOptions o;
  o.log_y = true;
  Series s{"s", {0.1, 0.3}, {1, 100}};  // x ticks of tenths: none of the labels below
  std::vector<std::string> labels = text_labels(svg_line_plot({s}, o));
  for (const char* tick : {"1", "10", "100"}) EXPECT_TRUE(has(labels, tick)) << tick;
  for (const char* tick : {"2", "5", "20", "50"}) EXPECT_FALSE(has(labels, tick)) << tick;

  Series small{"s", {0.1, 0.3}, {1e-5, 1e-2}};
  labels = text_labels(svg_line_plot({small}, o));
  for (const char* tick : {"10⁻⁵", "10⁻⁴", "10⁻³", "10⁻²"}) EXPECT_TRUE(has(labels, tick)) << tick;
  for (const std::string& label : labels) EXPECT_EQ(label.find("e-"), std::string::npos) << label;
}

// A marker at +inf is drawn only where its x is on the axis (positive, on a log axis), and markers
// at +inf alone, with no other data, still give valid axes, the markers on the top edge.
TEST(PlotSvg, MarkersAtInfinityNeedADrawableX) {
  PlotOptions o;  // the plot area runs from y 16 to 372 (no title)
  o.log_x = true;
  o.log_y = true;
  Series curve{"loss", {1e-3, 1e-2}, {0.5, 0.3}};
  Series off{"diverged", {0, -1, NAN}, {INFINITY, INFINITY, INFINITY}, Mark::cross};
  const std::string svg = svg_line_plot({curve, off}, o);
  expect_valid(svg);
  EXPECT_EQ(all(svg, "(<path d=\"M)").size(), 1u) << "the legend's cross alone";

  Series only{"diverged", {1e-2, 1e-1}, {INFINITY, INFINITY}, Mark::cross};
  const std::string alone = svg_line_plot({only}, o);
  expect_valid(alone);
  const std::vector<std::string> at = all(alone, "<path d=\"M[0-9.]+,([0-9.]+) ");
  ASSERT_EQ(at.size(), 3u);  // two on the plot, one in the legend
  EXPECT_EQ(at[0], "11.50");  // 4.5 px above the top edge: the cross's centre is on it
  EXPECT_EQ(at[1], "11.50");
  // With no finite y the y axis is the default one, 1 to 10, with its ticks.
  const std::vector<std::string> labels = text_labels(alone);
  EXPECT_TRUE(has(labels, "1"));
  EXPECT_TRUE(has(labels, "10"));
}


TEST(PlotSvg, NonFinitePointsAreSkippedAndBreakTheLine) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  Series s;
  s.name = "loss";
  s.x = {0, 1, 2, 3, 4, 5, 6};
  s.y = {1, 0.5, nan, 0.4, 0.3, inf, 0.2};
  std::string svg = svg_line_plot({s}, PlotOptions{});
  expect_valid(svg);
  EXPECT_EQ(all(svg, "(<polyline)").size(), 2u);
  EXPECT_EQ(all(svg, "(<circle)").size(), 1u);  // the lone point after inf
  // On a log axis, non-positive values are skipped as well.
  Series z;
  z.x = {0, 1, 2};
  z.y = {0, -1, 1};
  PlotOptions o;
  o.log_y = true;
  std::string log_svg = svg_line_plot({z}, o);
  expect_valid(log_svg);
  EXPECT_EQ(all(log_svg, "(<circle)").size(), 1u);
}

TEST(PlotSvg, EmptyAndDegenerateInputStillValid) {
  expect_valid(svg_line_plot({}, PlotOptions{}));
  EXPECT_NE(svg_line_plot({}, PlotOptions{}).find("no data"), std::string::npos);
  Series empty;
  empty.name = "nothing";
  expect_valid(svg_line_plot({empty}, PlotOptions{}));
  Series flat;
  flat.x = {3, 3, 3};
  flat.y = {0.7, 0.7, 0.7};
  expect_valid(svg_line_plot({flat}, PlotOptions{}));
  Series huge;
  huge.x = {0, 1};
  huge.y = {-1e300, 1e300};
  expect_valid(svg_line_plot({huge}, PlotOptions{}));
  Series tiny;
  tiny.x = {0, 1};
  tiny.y = {1, std::nextafter(1.0, 2.0)};
  expect_valid(svg_line_plot({tiny}, PlotOptions{}));
}

TEST(PlotSvg, DenseSeriesAreThinnedKeepingExtremes) {
  Series s;
  const int n = 200000;
  for (int i = 0; i < n; ++i) s.x.push_back(i), s.y.push_back(i == 123457 ? 50.0 : std::sin(i * 0.001));
  PlotOptions o;
  std::string svg = svg_line_plot({s}, o);
  expect_valid(svg);
  // The attribute is long: std::regex recurses per character, so cut it out by hand.
  const size_t at = svg.find("points=\"");
  ASSERT_NE(at, std::string::npos);
  ASSERT_EQ(svg.find("points=\"", at + 1), std::string::npos) << "one polyline expected";
  const std::string pts = svg.substr(at + 8, svg.find('"', at + 8) - (at + 8));
  size_t count = std::count(pts.begin(), pts.end(), ',');
  EXPECT_LE(count, 4u * static_cast<size_t>(o.width));
  EXPECT_GT(count, 100u);
  // The spike sets the y range, so some point reaches the top edge of the plot area.
  double top = 1e9;
  for (size_t c = pts.find(','); c != std::string::npos; c = pts.find(',', c + 1))
    top = std::min(top, std::stod(pts.substr(c + 1)));
  EXPECT_LE(top, 37.0);
}

TEST(PlotSvg, RejectsMismatchedSeriesAndBadSizes) {
  Series s;
  s.name = "bad";
  s.x = {1, 2, 3};
  s.y = {1, 2};
  EXPECT_THROW(svg_line_plot({s}, PlotOptions{}), Error);
  PlotOptions o;
  o.width = 0;
  EXPECT_THROW(svg_line_plot({}, o), Error);
  o.width = 720;
  o.height = 100000;
  EXPECT_THROW(svg_line_plot({}, o), Error);
}

}  // namespace
}  // namespace lrlab
