// SVG line plots: well-formed, self-contained, with ticks, legend and colours; odd data is handled.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <regex>
#include <set>
#include <string>
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
  for (const char* tick : {"0.001", "0.01", "0.1", "1", "10", "100"}) EXPECT_TRUE(has(labels, tick)) << tick;
  EXPECT_FALSE(has(labels, "0.5"));

  Series wide;
  wide.x = {1, 2};
  wide.y = {1e-12, 1e12};
  std::vector<std::string> wide_labels = text_labels(svg_line_plot({wide}, o));
  EXPECT_TRUE(has(wide_labels, "1e-12"));
  EXPECT_TRUE(has(wide_labels, "1e12"));
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
