#include "lrlab/plot.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "lrlab/error.hpp"

namespace lrlab {
namespace {

constexpr int kMaxTicks = 60;  // bounds every tick loop, whatever the data

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

// A pixel coordinate in the SVG.
std::string num(double v) { return fmt("%.2f", v); }

}  // namespace

std::string plot_colour(size_t i) {
  static const char* const palette[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                        "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
  if (i < 10) return palette[i];
  // Golden-angle hues keep further colours apart from their neighbours.
  return "hsl(" + fmt("%.0f", std::fmod(static_cast<double>(i) * 137.508, 360.0)) + ",65%,45%)";
}

namespace {

struct Tick {
  double value;
  std::string label;
};

// One axis: the data range widened to round tick values, and the map onto [0, 1].
struct Axis {
  bool log = false;
  double lo = 0, hi = 1;  // log axes hold log10 of the bounds
  std::vector<Tick> ticks;

  // Beyond 1e300 the axis arithmetic itself would overflow.
  bool usable(double v) const { return std::fabs(v) <= 1e300 && (!log || v > 0); }
  double frac(double v) const { return ((log ? std::log10(v) : v) - lo) / (hi - lo); }
};

// Plain decimals for everyday magnitudes ("0.05", "120"), %g beyond them; as many digits as the
// tick spacing needs.
std::string linear_label(double v, double step, double magnitude) {
  if (std::fabs(v) < step * 1e-6) return "0";
  int step_exponent = static_cast<int>(std::floor(std::log10(step) + 1e-9));
  char buf[64];
  if (magnitude < 1e6 && step_exponent >= -6) {
    std::snprintf(buf, sizeof buf, "%.*f", std::max(0, -step_exponent), v);
    std::string s = buf;
    if (s.find('.') != std::string::npos) {
      s.erase(s.find_last_not_of('0') + 1);
      if (s.back() == '.') s.pop_back();
    }
    return s;
  }
  int digits = std::clamp(static_cast<int>(std::floor(std::log10(magnitude))) - step_exponent + 1, 1, 15);
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

// Log ticks m x 10^k (m in 1..9), labelled in one style per axis: plain decimals when every tick is
// an everyday magnitude ("0.002", "500"), powers of ten otherwise ("2×10⁻⁵", "10³"), so that "5e-5"
// never sits next to "0.0001" on one axis.
std::string superscript(int k) {
  static const char* const digit[] = {"⁰", "¹", "²", "³", "⁴", "⁵", "⁶", "⁷", "⁸", "⁹"};
  std::string out = k < 0 ? "⁻" : "";
  for (char c : std::to_string(std::abs(k))) out += digit[c - '0'];
  return out;
}

void add_log_ticks(Axis* a, const std::vector<std::pair<int, int>>& mk) {
  const bool plain = std::all_of(mk.begin(), mk.end(), [](auto t) { return t.second >= -4 && t.second <= 5; });
  for (auto [m, k] : mk) {
    std::string label = plain ? fmt("%g", m * std::pow(10.0, k))
                              : (m == 1 ? "" : std::to_string(m) + "×") + "10" + superscript(k);
    a->ticks.push_back({std::log10(static_cast<double>(m)) + k, label});
  }
}

// A log axis over less than two decades. Powers of ten alone would leave one or two labels (a
// validation loss between 0.3 and 0.5 got only 0.1 and 1), so the ticks are 1, 2 and 5 times
// powers of ten, or every multiple where those still give fewer than four, and the axis ends at
// the ticks just around the data.
void sub_decade_ticks(Axis* a, double lo, double hi, int first_decade, int last_decade) {
  static const std::vector<int> coarse = {1, 2, 5}, fine = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  for (const std::vector<int>* multiples : {&coarse, &fine}) {
    std::vector<std::pair<int, int>> all;  // (m, k), in increasing order of m x 10^k
    for (int k = first_decade; k <= last_decade; ++k)
      for (int m : *multiples) all.push_back({m, k});
    auto value = [](std::pair<int, int> t) { return t.first * std::pow(10.0, t.second); };
    // The tolerance keeps a tick that equals the data's end up to rounding (3 x 0.1 is not 0.3).
    size_t begin = 0, end = all.size() - 1;
    while (begin + 1 < all.size() && value(all[begin + 1]) <= lo * (1 + 1e-9)) ++begin;
    while (end > begin + 1 && value(all[end - 1]) >= hi * (1 - 1e-9)) --end;
    if (end - begin + 1 < 4 && multiples == &coarse) continue;
    a->ticks.clear();
    add_log_ticks(a, {all.begin() + begin, all.begin() + end + 1});
    a->lo = a->ticks.front().value;
    a->hi = a->ticks.back().value;
    return;
  }
}

Axis make_axis(bool log, bool have, double lo, double hi) {
  Axis a;
  a.log = log;
  if (log) {
    double l = have ? std::floor(std::log10(lo)) : 0, h = have ? std::ceil(std::log10(hi)) : 1;
    if (h <= l) h = l + 1;
    int decades = static_cast<int>(h - l);
    // Below 1e-300, m x 10^k could round to 0.
    if (have && std::log10(hi / lo) < 2 && lo >= 1e-300) {
      sub_decade_ticks(&a, lo, hi, static_cast<int>(l), static_cast<int>(h));
      return a;
    }
    int stride = std::max(1, (decades + 9) / 10);
    a.lo = l;
    a.hi = l + std::ceil((h - l) / stride) * stride;
    std::vector<std::pair<int, int>> powers;
    for (double k = a.lo; k <= a.hi + 0.5 && powers.size() < kMaxTicks; k += stride)
      powers.push_back({1, static_cast<int>(k)});
    add_log_ticks(&a, powers);
    return a;
  }
  if (!have) lo = 0, hi = 1;
  // A flat (or all but flat) range gets room around it; ticks could not step through it.
  if (hi - lo <= 1e-9 * std::max(std::fabs(lo), std::fabs(hi))) {
    double pad = lo != 0 ? std::fabs(lo) * 0.5 : 1;
    lo -= pad, hi += pad;
  }
  // About five ticks, spaced 1, 2 or 5 times a power of ten.
  double rough = (hi - lo) / 5;
  double decade = std::pow(10.0, std::floor(std::log10(rough)));
  double r = rough / decade;
  double step = (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10) * decade;
  if (step > 0 && std::isfinite(step)) {
    double first = std::floor(lo / step), last = std::ceil(hi / step);
    if (last - first <= kMaxTicks) {
      a.lo = first * step;
      a.hi = last * step;
      double magnitude = std::max(std::fabs(a.lo), std::fabs(a.hi));
      for (int i = 0; i <= static_cast<int>(last - first); ++i) {
        double v = (first + i) * step;
        a.ticks.push_back({v, linear_label(v, step, magnitude)});
      }
      return a;
    }
  }
  // Not reached for finite data, but never loop on a bad step: label the ends only.
  a.lo = lo;
  a.hi = hi;
  a.ticks = {{lo, fmt("%g", lo)}, {hi, fmt("%g", hi)}};
  return a;
}

struct Point {
  double x, y;
};

// A marker at y = +inf stands for a value off the scale: drawn on the top edge.
bool pinned_top(const Series& s, size_t i, const Axis& ax) {
  return s.mark != Mark::line && s.y[i] == std::numeric_limits<double>::infinity() && ax.usable(s.x[i]);
}

// Splits a series into runs of drawable points (in pixels) and thins each run to at most the
// first, lowest, highest and last point of every pixel column.
std::vector<std::vector<Point>> runs_of(const Series& s, const Axis& ax, const Axis& ay, double left,
                                        double top, double w, double h) {
  std::vector<std::vector<Point>> runs;
  std::vector<Point> run, column;
  auto flush_column = [&] {
    if (column.empty()) return;
    size_t lo = 0, hi = 0;
    for (size_t i = 1; i < column.size(); ++i) {
      if (column[i].y < column[lo].y) lo = i;
      if (column[i].y > column[hi].y) hi = i;
    }
    size_t keep[] = {0, std::min(lo, hi), std::max(lo, hi), column.size() - 1};
    for (size_t k = 0; k < 4; ++k)
      if (k == 0 || keep[k] != keep[k - 1]) run.push_back(column[keep[k]]);
    column.clear();
  };
  auto flush_run = [&] {
    flush_column();
    if (!run.empty()) runs.push_back(std::move(run));
    run.clear();
  };
  for (size_t i = 0; i < s.x.size(); ++i) {
    const bool pinned = pinned_top(s, i, ax);
    if (!pinned && (!ax.usable(s.x[i]) || !ay.usable(s.y[i]))) {
      flush_run();
      continue;
    }
    Point p{left + ax.frac(s.x[i]) * w, pinned ? top : top + (1 - ay.frac(s.y[i])) * h};
    if (!column.empty() && std::floor(column.back().x) != std::floor(p.x)) flush_column();
    column.push_back(p);
  }
  flush_run();
  return runs;
}

struct Box {
  double x, y, w, h;
  bool contains(Point p) const { return p.x >= x && p.x <= x + w && p.y >= y && p.y <= y + h; }
};

// The length of the segment a-b inside the box (Liang-Barsky clipping).
double length_inside(Point a, Point b, const Box& box) {
  const double dx = b.x - a.x, dy = b.y - a.y;
  double t0 = 0, t1 = 1;
  const double p[] = {-dx, dx, -dy, dy};
  const double q[] = {a.x - box.x, box.x + box.w - a.x, a.y - box.y, box.y + box.h - a.y};
  for (int i = 0; i < 4; ++i) {
    if (p[i] == 0) {
      if (q[i] < 0) return 0;
      continue;
    }
    const double t = q[i] / p[i];
    if (p[i] < 0) t0 = std::max(t0, t);
    else t1 = std::min(t1, t);
    if (t0 > t1) return 0;
  }
  return (t1 - t0) * std::hypot(dx, dy);
}

constexpr double kMarkerRadius = 4.5;

std::string marker_svg(Mark mark, Point p, const std::string& colour, bool filled) {
  const std::string paint = " fill=\"" + (filled ? colour : std::string("white")) + "\" stroke=\"" + colour +
                            "\" stroke-width=\"1.5\"/>\n";
  const double r = kMarkerRadius;
  switch (mark) {
    case Mark::diamond:
      return "<polygon points=\"" + num(p.x) + "," + num(p.y - r) + " " + num(p.x + r) + "," + num(p.y) + " " +
             num(p.x) + "," + num(p.y + r) + " " + num(p.x - r) + "," + num(p.y) + "\"" + paint;
    case Mark::triangle:
      return "<polygon points=\"" + num(p.x) + "," + num(p.y - 1.2 * r) + " " + num(p.x + r) + "," +
             num(p.y + 0.8 * r) + " " + num(p.x - r) + "," + num(p.y + 0.8 * r) + "\"" + paint;
    case Mark::cross:
      return "<path d=\"M" + num(p.x - r) + "," + num(p.y - r) + " L" + num(p.x + r) + "," + num(p.y + r) + " M" +
             num(p.x - r) + "," + num(p.y + r) + " L" + num(p.x + r) + "," + num(p.y - r) + "\" fill=\"none\" stroke=\"" +
             colour + "\" stroke-width=\"2\"/>\n";
    case Mark::circle:
    case Mark::line:  // not a marker; drawn as a circle should it ever reach here
      break;
  }
  return "<circle cx=\"" + num(p.x) + "\" cy=\"" + num(p.y) + "\" r=\"" + num(r) + "\"" + paint;
}

}  // namespace

std::string xml_escape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (static_cast<unsigned char>(c) >= 0x80) {
      // A byte that starts no well-formed character would make the whole file unreadable XML.
      const size_t len = detail::printable_utf8(s, i);
      // U+FFFE and U+FFFF (EF BF BE, EF BF BF) are not characters XML 1.0 allows.
      const bool nonchar =
          len == 3 && s[i] == '\xef' && s[i + 1] == '\xbf' && (s[i + 2] == '\xbe' || s[i + 2] == '\xbf');
      if (len && !nonchar) out.append(s, i, len);
      else out += '?';
      if (len) i += len - 1;
      continue;
    }
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // Control characters are not allowed in XML 1.0 text.
        out += (static_cast<unsigned char>(c) < 0x20 && c != '\t') ? '?' : c;
    }
  }
  return out;
}

std::string svg_line_plot(const std::vector<Series>& series, const PlotOptions& o) {
  LRLAB_REQUIRE(o.width >= 160 && o.width <= 16000 && o.height >= 120 && o.height <= 16000,
                "plot size ", o.width, "x", o.height, " is outside [160, 16000] x [120, 16000]");
  for (const Series& s : series)
    LRLAB_REQUIRE(s.x.size() == s.y.size(), "plot series '", s.name, "' has ", s.x.size(), " x values but ",
                  s.y.size(), " y values");

  Axis probe_x, probe_y;
  probe_x.log = o.log_x;
  probe_y.log = o.log_y;
  // A marker pinned to the top edge widens the x axis only.
  bool have = false, have_y = false;
  double x0 = 0, x1 = 0, y0 = 0, y1 = 0;
  for (const Series& s : series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      const bool pinned = pinned_top(s, i, probe_x);
      if (!pinned && (!probe_x.usable(s.x[i]) || !probe_y.usable(s.y[i]))) continue;
      if (!have) x0 = x1 = s.x[i];
      x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
      have = true;
      if (pinned) continue;
      if (!have_y) y0 = y1 = s.y[i];
      y0 = std::min(y0, s.y[i]), y1 = std::max(y1, s.y[i]);
      have_y = true;
    }
  // Room above the data for the pinned markers, so that none reads as a point of the data (the
  // axis ends at the tick around the largest value, which can be that value itself).
  bool any_pinned = false;
  for (const Series& s : series)
    for (size_t i = 0; i < s.x.size() && !any_pinned; ++i) any_pinned = pinned_top(s, i, probe_x);
  if (any_pinned && have_y) y1 = o.log_y ? y1 * 1.25 : y1 + 0.1 * std::max(y1 - y0, std::fabs(y1));
  Axis ax = make_axis(o.log_x, have, x0, x1);
  Axis ay = make_axis(o.log_y, have_y, y0, y1);

  const double left = 72, right = 24, top = o.title.empty() ? 16 : 36, bottom = 48;
  const double w = o.width - left - right, h = o.height - top - bottom;
  std::string svg;
  auto add = [&svg](const std::string& s) { svg += s; };

  add("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(o.width) + "\" height=\"" +
      std::to_string(o.height) + "\" viewBox=\"0 0 " + std::to_string(o.width) + " " +
      std::to_string(o.height) + "\" font-family=\"sans-serif\" font-size=\"12\">\n");
  add("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
  if (!o.title.empty())
    add("<text x=\"" + num(left + w / 2) + "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">" +
        xml_escape(o.title) + "</text>\n");

  for (const Tick& t : ax.ticks) {
    double px = left + (t.value - ax.lo) / (ax.hi - ax.lo) * w;
    add("<line x1=\"" + num(px) + "\" y1=\"" + num(top) + "\" x2=\"" + num(px) + "\" y2=\"" + num(top + h) +
        "\" stroke=\"#e0e0e0\"/>\n");
    add("<text x=\"" + num(px) + "\" y=\"" + num(top + h + 16) + "\" text-anchor=\"middle\">" +
        xml_escape(t.label) + "</text>\n");
  }
  for (const Tick& t : ay.ticks) {
    double py = top + (1 - (t.value - ay.lo) / (ay.hi - ay.lo)) * h;
    add("<line x1=\"" + num(left) + "\" y1=\"" + num(py) + "\" x2=\"" + num(left + w) + "\" y2=\"" + num(py) +
        "\" stroke=\"#e0e0e0\"/>\n");
    add("<text x=\"" + num(left - 6) + "\" y=\"" + num(py + 4) + "\" text-anchor=\"end\">" +
        xml_escape(t.label) + "</text>\n");
  }
  add("<rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(w) + "\" height=\"" + num(h) +
      "\" fill=\"none\" stroke=\"black\"/>\n");
  if (!o.xlabel.empty())
    add("<text x=\"" + num(left + w / 2) + "\" y=\"" + num(o.height - 10.0) + "\" text-anchor=\"middle\">" +
        xml_escape(o.xlabel) + "</text>\n");
  if (!o.ylabel.empty())
    add("<text transform=\"translate(16," + num(top + h / 2) + ") rotate(-90)\" text-anchor=\"middle\">" +
        xml_escape(o.ylabel) + "</text>\n");

  std::vector<std::vector<std::vector<Point>>> drawn;
  for (const Series& s : series) drawn.push_back(runs_of(s, ax, ay, left, top, w, h));
  auto colour_of = [&series](size_t i) {
    return series[i].colour.empty() ? plot_colour(i) : xml_escape(series[i].colour);
  };
  for (size_t i = 0; i < series.size(); ++i) {
    for (const std::vector<Point>& run : drawn[i]) {
      if (series[i].mark != Mark::line) {
        for (const Point& p : run) add(marker_svg(series[i].mark, p, colour_of(i), series[i].filled));
        continue;
      }
      if (run.size() == 1) {
        add("<circle cx=\"" + num(run[0].x) + "\" cy=\"" + num(run[0].y) + "\" r=\"2\" fill=\"" + colour_of(i) +
            "\"/>\n");
        continue;
      }
      add("<polyline fill=\"none\" stroke=\"" + colour_of(i) + "\" stroke-width=\"1.5\" points=\"");
      for (const Point& p : run) add(num(p.x) + "," + num(p.y) + " ");
      svg.back() = '"';
      add("/>\n");
    }
  }
  if (!have)
    add("<text x=\"" + num(left + w / 2) + "\" y=\"" + num(top + h / 2) +
        "\" text-anchor=\"middle\" fill=\"#808080\">no data</text>\n");

  // The legend. A name longer than the box holds is cut, with the whole of it as the entry's
  // tooltip, rather than run past the picture's edge.
  constexpr size_t kLegendChars = 60;
  size_t named = 0, longest = 0;
  for (const Series& s : series)
    if (!s.name.empty()) ++named, longest = std::max(longest, s.name.size());
  if (named > 0) {
    const double lw = 34 + 7.4 * static_cast<double>(std::min(longest, kLegendChars)), lh = 8 + 16.0 * named;
    // Like matplotlib's loc="best": of the four corners, the one that hides the least of the lines
    // and markers; on a tie the first in this order.
    const Box corners[] = {{left + w - lw - 8, top + 8, lw, lh},
                           {left + 8, top + 8, lw, lh},
                           {left + w - lw - 8, top + h - lh - 8, lw, lh},
                           {left + 8, top + h - lh - 8, lw, lh}};
    double least = std::numeric_limits<double>::infinity();
    Box box = corners[0];
    for (const Box& c : corners) {
      double hidden = 0;
      for (size_t i = 0; i < series.size(); ++i)
        for (const std::vector<Point>& run : drawn[i]) {
          const bool points = series[i].mark != Mark::line || run.size() == 1;
          if (points) {
            // A marker hides about as much as a line across the box's width would.
            const Box reach{c.x - kMarkerRadius, c.y - kMarkerRadius, c.w + 2 * kMarkerRadius, c.h + 2 * kMarkerRadius};
            for (const Point& p : run) hidden += reach.contains(p) ? 2 * kMarkerRadius : 0;
            continue;
          }
          for (size_t k = 1; k < run.size(); ++k) hidden += length_inside(run[k - 1], run[k], c);
        }
      if (hidden < least) least = hidden, box = c;
    }
    const double lx = box.x;
    add("<g class=\"legend\">\n<rect x=\"" + num(lx) + "\" y=\"" + num(box.y) + "\" width=\"" + num(lw) +
        "\" height=\"" + num(lh) + "\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#c0c0c0\"/>\n");
    double ly = box.y + 12;
    for (size_t i = 0; i < series.size(); ++i) {
      if (series[i].name.empty()) continue;
      if (series[i].mark == Mark::line)
        add("<line x1=\"" + num(lx + 6) + "\" y1=\"" + num(ly - 4) + "\" x2=\"" + num(lx + 24) + "\" y2=\"" +
            num(ly - 4) + "\" stroke=\"" + colour_of(i) + "\" stroke-width=\"2\"/>\n");
      else
        add(marker_svg(series[i].mark, {lx + 15, ly - 4}, colour_of(i), series[i].filled));
      const std::string& name = series[i].name;
      if (name.size() <= kLegendChars) {
        add("<text x=\"" + num(lx + 28) + "\" y=\"" + num(ly) + "\">" + xml_escape(name) + "</text>\n");
      } else {
        size_t cut = kLegendChars - 1;
        while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xC0) == 0x80) --cut;  // not inside a UTF-8 character
        add("<text x=\"" + num(lx + 28) + "\" y=\"" + num(ly) + "\"><title>" + xml_escape(name) + "</title>" +
            xml_escape(name.substr(0, cut)) + "\u2026</text>\n");
      }
      ly += 16;
    }
    add("</g>\n");
  }
  add("</svg>\n");
  return svg;
}

}  // namespace lrlab
