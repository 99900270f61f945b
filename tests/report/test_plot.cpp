// The SVG plots of the reports: well-formed standalone documents, data at the pixels the layout
// implies (linear and log axes), broken lines at missing values, escaped text, heatmaps whose
// extremes take the ends of the colour scale, and byte-identical output for the same input.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <stdexcept>

#include "report/plot.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr PlotArea A = kLinePlotArea;

// Whether svg parses as XML (python3's minidom) with a root <svg> that has the SVG namespace,
// width, height and viewBox.
bool valid_svg(const std::string& svg) {
  REQUIRE_MESSAGE(std::system("python3 -c pass") == 0, "python3 is needed (scripts/deps.sh installs it)");
  ScratchDir dir;
  write_file(dir / "plot.svg", svg);
  const std::string check =
      "import sys, xml.dom.minidom as m; d = m.parse(sys.argv[1]).documentElement; "
      "sys.exit(0 if d.tagName == 'svg' and d.getAttribute('xmlns') == 'http://www.w3.org/2000/svg' "
      "and all(d.hasAttribute(a) for a in ('width', 'height', 'viewBox')) else 3)";
  return std::system(("python3 -c \"" + check + "\" '" + (dir / "plot.svg").string() + "'").c_str()) == 0;
}

size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + 1)) ++n;
  return n;
}

// The value of attribute `name` in each element that starts with `open` (e.g. "<polyline "), in order.
std::vector<std::string> attrs(const std::string& svg, const std::string& open, const std::string& name) {
  std::vector<std::string> out;
  for (size_t at = svg.find(open); at != std::string::npos; at = svg.find(open, at + 1)) {
    const size_t end = svg.find('>', at), a = svg.find(" " + name + "=\"", at);
    REQUIRE(a < end);
    const size_t begin = a + name.size() + 3;
    out.push_back(svg.substr(begin, svg.find('"', begin) - begin));
  }
  return out;
}

using Points = std::vector<std::pair<double, double>>;

// The points of every polyline, in pixels.
std::vector<Points> polylines(const std::string& svg) {
  std::vector<Points> out;
  for (const std::string& points : attrs(svg, "<polyline ", "points")) {
    out.emplace_back();
    for (size_t at = 0; at < points.size();) {
      const size_t comma = points.find(',', at), space = std::min(points.find(' ', at), points.size());
      out.back().emplace_back(std::stod(points.substr(at, comma - at)),
                              std::stod(points.substr(comma + 1, space - comma - 1)));
      at = space + 1;
    }
  }
  return out;
}

// The centres of every circle, in pixels.
Points circles(const std::string& svg) {
  const auto cx = attrs(svg, "<circle ", "cx"), cy = attrs(svg, "<circle ", "cy");
  Points out;
  for (size_t i = 0; i < cx.size(); ++i) out.emplace_back(std::stod(cx[i]), std::stod(cy[i]));
  return out;
}

LinePlot two_series() {
  LinePlot p;
  p.title = "loss by step";
  p.x_label = "step";
  p.y_label = "loss";
  p.series = {{"upit", {0, 250, 500, 750, 1000}, {4, 3, 2.5, 2.2, 2}}, {"sparse", {0, 500, 1000}, {4, 3.5, 3}}};
  return p;
}

Heatmap three_by_four() {
  Heatmap h;
  h.title = "distances";
  h.row_names = {"r0", "r1", "r2"};
  h.col_names = {"c0", "c1", "c2", "c3"};
  h.values = {{0.5, 0.25, 0.75, 3}, {1, kNaN, 2, 1.5}, {0.3, -1, 0, 2.5}};
  return h;
}

}  // namespace

TEST_CASE("plot: a line plot is a valid SVG with title, axis labels, ticks, legend and one polyline per series") {
  const std::string svg = line_plot_svg(two_series());
  CHECK(valid_svg(svg));
  for (const char* s : {">loss by step</text>", ">step</text>", ">loss</text>", ">upit</text>", ">sparse</text>",
                        ">0</text>", ">200</text>", ">1k</text>", ">4</text>", "font-family=\"sans-serif\""})
    CHECK_MESSAGE(svg.find(s) != std::string::npos, s);
  CHECK(svg.find("<script") == std::string::npos);
  CHECK(svg.find("href") == std::string::npos);  // nothing outside the document
  const auto strokes = attrs(svg, "<polyline ", "stroke");
  REQUIRE(strokes.size() == 2);
  CHECK(strokes[0] == series_colour(0));
  CHECK(strokes[1] == series_colour(1));
  CHECK(strokes[0] != strokes[1]);
  CHECK(circles(svg).empty());  // no markers asked for
}

TEST_CASE("plot: a polyline's pixels follow the plot area and the axes widened to nice ticks") {
  LinePlot p;
  p.series = {{"s", {1, 5, 9}, {0.5, 3, 9.5}}};  // both axes widen to [0, 10], ticks 0, 2, ..., 10
  const std::string svg = line_plot_svg(p);
  const auto lines = polylines(svg);
  REQUIRE(lines.size() == 1);
  REQUIRE(lines[0].size() == 3);
  CHECK(lines[0].front().first == doctest::Approx(A.left + 0.1 * A.width));
  CHECK(lines[0].front().second == doctest::Approx(A.top + 0.95 * A.height));
  CHECK(lines[0].back().first == doctest::Approx(A.left + 0.9 * A.width));
  CHECK(lines[0].back().second == doctest::Approx(A.top + 0.05 * A.height));
  for (const char* tick : {">0</text>", ">2</text>", ">4</text>", ">6</text>", ">8</text>", ">10</text>"})
    CHECK_MESSAGE(count(svg, tick) == 2, tick);  // on each axis
  CHECK(svg.find(">12</text>") == std::string::npos);

  p.markers = true;
  p.series[0].name.clear();  // no legend entry (whose swatch has a marker too): every circle is a point
  const Points dots = circles(line_plot_svg(p));
  REQUIRE(dots.size() == 3);
  CHECK(dots[1].first == doctest::Approx(A.left + 0.5 * A.width));
  CHECK(dots[1].second == doctest::Approx(A.top + 0.7 * A.height));
}

TEST_CASE("plot: a log axis puts 10, 100 and 1000 a decade apart and skips non-positive values") {
  LinePlot p;
  p.log_x = true;
  p.series = {{"s", {10, 100, 1000}, {1, 2, 3}}};
  std::string svg = line_plot_svg(p);
  CHECK(valid_svg(svg));
  auto lines = polylines(svg);
  REQUIRE(lines.size() == 1);
  REQUIRE(lines[0].size() == 3);
  CHECK(lines[0][0].first == doctest::Approx(A.left));
  CHECK(lines[0][1].first - lines[0][0].first == doctest::Approx(A.width / 2));
  CHECK(lines[0][2].first - lines[0][1].first == doctest::Approx(A.width / 2));
  for (const char* tick : {">10</text>", ">20</text>", ">50</text>", ">100</text>", ">500</text>", ">1k</text>"})
    CHECK_MESSAGE(svg.find(tick) != std::string::npos, tick);  // two decades: 2 and 5 ticks too

  p.log_y = true;
  p.series = {{"s", {1, 2, 3, 4}, {1, 0, -1, 100}}};  // y = 0 and -1 can't be drawn on a log axis
  svg = line_plot_svg(p);
  CHECK(valid_svg(svg));
  CHECK(polylines(svg).empty());
  const Points dots = circles(svg);  // two lone points, drawn as dots
  REQUIRE(dots.size() == 2);
  CHECK(dots[0].second == doctest::Approx(A.top + A.height));
  CHECK(dots[1].second == doctest::Approx(A.top));  // y in [1, 100]: two decades
}

TEST_CASE("plot: NaN and infinite values break a series into separate polylines") {
  LinePlot p;
  p.series = {{"s", {0, 1, 2, 3, 4, 5, 6}, {1, 2, kNaN, 4, 5, kInf, 7}}};
  const std::string svg = line_plot_svg(p);
  CHECK(valid_svg(svg));
  const auto lines = polylines(svg);
  REQUIRE(lines.size() == 2);
  CHECK(lines[0].size() == 2);
  CHECK(lines[1].size() == 2);
  CHECK(lines[1][0].first == doctest::Approx(A.left + 0.5 * A.width));  // x = 3 on [0, 6]
  CHECK(circles(svg).size() == 1);                                      // the lone last point
}

TEST_CASE("plot: titles, labels and names are XML-escaped") {
  LinePlot p = two_series();
  p.title = "<&> \"quoted\" 'single'";
  p.series[0].name = "a<b";
  p.x_label = "x & y";
  const std::string svg = line_plot_svg(p);
  CHECK(valid_svg(svg));
  CHECK(svg.find("&lt;&amp;&gt; &quot;quoted&quot; &apos;single&apos;") != std::string::npos);
  CHECK(svg.find("<&>") == std::string::npos);
  CHECK(svg.find(">a&lt;b</text>") != std::string::npos);
  CHECK(svg.find(">x &amp; y</text>") != std::string::npos);
  Heatmap h = three_by_four();
  h.row_names[0] = "<row>";
  h.title = "&";
  CHECK(valid_svg(heatmap_svg(h)));
}

TEST_CASE("plot: degenerate line plots still give valid documents") {
  SUBCASE("no series, or none with a drawable point, says no data") {
    CHECK(valid_svg(line_plot_svg(LinePlot{})));
    CHECK(line_plot_svg(LinePlot{}).find(">no data</text>") != std::string::npos);
    LinePlot p;
    p.log_y = true;
    p.series = {{"empty", {}, {}}, {"non-positive", {1, 2}, {0, -3}}, {"nan", {kNaN}, {1}}};
    const std::string svg = line_plot_svg(p);
    CHECK(valid_svg(svg));
    CHECK(svg.find(">no data</text>") != std::string::npos);
    CHECK(svg.find(">non-positive</text>") != std::string::npos);  // still in the legend
  }
  SUBCASE("a single point is a dot in the middle of padded axes") {
    LinePlot p;
    p.series = {{"one", {3}, {5}}};
    const std::string svg = line_plot_svg(p);
    CHECK(valid_svg(svg));
    CHECK(svg.find("no data") == std::string::npos);
    const Points dots = circles(svg);
    REQUIRE(dots.size() == 1);
    CHECK(dots[0].first == doctest::Approx(A.left + A.width / 2));
    CHECK(dots[0].second == doctest::Approx(A.top + A.height / 2));
  }
  SUBCASE("all-equal y values get a padded range with distinct ticks") {
    LinePlot p;
    p.series = {{"flat", {0, 1, 2}, {2, 2, 2}}};
    const std::string svg = line_plot_svg(p);
    CHECK(valid_svg(svg));
    const auto lines = polylines(svg);
    REQUIRE(lines.size() == 1);
    for (const auto& [x, y] : lines[0]) CHECK(y == doctest::Approx(A.top + A.height / 2));
    CHECK(svg.find(">1.8</text>") != std::string::npos);
    CHECK(svg.find(">2.2</text>") != std::string::npos);
  }
  SUBCASE("extreme magnitudes give finite coordinates") {
    for (const bool log : {false, true}) {
      LinePlot p;
      p.log_x = p.log_y = log;
      p.series = {{"wide", {-1e299, 1e-310, 1e299, 1e308, 5e-324}, {1e299, 1e-299, -1e299, 2, 1e-320}}};
      const std::string svg = line_plot_svg(p);
      CHECK(valid_svg(svg));
      CHECK(svg.find("nan") == std::string::npos);
      CHECK(svg.find("inf") == std::string::npos);
    }
  }
  SUBCASE("x and y of different lengths are refused") {
    LinePlot p;
    p.series = {{"bad", {1, 2, 3}, {1, 2}}};
    CHECK_THROWS_AS(line_plot_svg(p), std::invalid_argument);
  }
}

TEST_CASE("plot: a heatmap has a cell per value, its extremes at the ends of the colour scale, NaN grey") {
  const Heatmap h = three_by_four();
  const std::string svg = heatmap_svg(h);
  CHECK(valid_svg(svg));
  const auto fills = attrs(svg, "<rect class=\"cell\"", "fill");
  REQUIRE(fills.size() == 12);
  CHECK(fills[2 * 4 + 1] == "#440154");          // -1, the smallest
  CHECK(fills[0 * 4 + 3] == "#fde725");          // 3, the largest
  CHECK(fills[1 * 4 + 1] == "#bbbbbb");          // NaN
  CHECK(fills[2 * 4 + 2] == heat_colour(0.25));  // 0 on [-1, 3]
  for (size_t i = 0; i < fills.size(); ++i)
    if (i != 9 && i != 3 && i != 5) CHECK(fills[i] != "#440154");
  // The values are written in the cells, light on dark cells and dark on light ones.
  CHECK(svg.find("fill=\"#ffffff\">-1.00</text>") != std::string::npos);
  CHECK(svg.find("fill=\"#000000\">3.00</text>") != std::string::npos);
  CHECK(svg.find(">0.25</text>") != std::string::npos);
  CHECK(count(svg, "<linearGradient") == 1);  // the colour bar, labelled with the extremes
  CHECK(svg.find(">3</text>") != std::string::npos);
  CHECK(svg.find(">-1</text>") != std::string::npos);
  for (const char* label : {">r0</text>", ">r2</text>", ">c0</text>", ">c3</text>", ">distances</text>"})
    CHECK_MESSAGE(svg.find(label) != std::string::npos, label);

  Heatmap quiet = h;
  quiet.annotate = false;
  CHECK(heatmap_svg(quiet).find(">0.25</text>") == std::string::npos);
}

TEST_CASE("plot: heatmaps with bad shapes are refused, empty ones say no data") {
  Heatmap h = three_by_four();
  h.values[1].pop_back();
  CHECK_THROWS_AS(heatmap_svg(h), std::invalid_argument);
  h = three_by_four();
  h.col_names.pop_back();
  CHECK_THROWS_AS(heatmap_svg(h), std::invalid_argument);
  h = three_by_four();
  h.row_names.clear();  // numbered instead
  CHECK(heatmap_svg(h).find(">2</text>") != std::string::npos);
  const std::string empty = heatmap_svg(Heatmap{});
  CHECK(valid_svg(empty));
  CHECK(empty.find(">no data</text>") != std::string::npos);
  CHECK(valid_svg(heatmaps_svg({}, "nothing")));
}

TEST_CASE("plot: heatmaps side by side share one colour scale") {
  Heatmap before, after;
  before.title = "before";
  before.values = {{0, 1}, {1, 0}};
  after.title = "after";
  after.values = {{0, 2}, {2, 0}};
  const std::string svg = heatmaps_svg({before, after}, "distances before and after");
  CHECK(valid_svg(svg));
  const auto fills = attrs(svg, "<rect class=\"cell\"", "fill");
  REQUIRE(fills.size() == 8);
  CHECK(fills[0] == "#440154");
  CHECK(fills[1] == heat_colour(0.5));  // 1 is half of the shared maximum, 2
  CHECK(fills[5] == "#fde725");
  CHECK(count(svg, "<linearGradient") == 1);
  for (const char* s : {">before</text>", ">after</text>", ">distances before and after</text>"})
    CHECK_MESSAGE(svg.find(s) != std::string::npos, s);
}

TEST_CASE("plot: the same input gives byte-identical SVG") {
  LinePlot p = two_series();
  p.log_y = true;
  p.markers = true;
  const std::string first = line_plot_svg(p);
  const LinePlot copy = p;
  CHECK(line_plot_svg(copy) == first);
  CHECK(heatmap_svg(three_by_four()) == heatmap_svg(three_by_four()));
  p.series[0].y[2] = 2.6;  // and different input gives different output
  CHECK(line_plot_svg(p) != first);
}

TEST_CASE("plot: the palettes") {
  CHECK(heat_colour(0) == "#440154");
  CHECK(heat_colour(1) == "#fde725");
  CHECK(heat_colour(-3) == "#440154");
  CHECK(heat_colour(7) == "#fde725");
  CHECK(heat_colour(0.5) != heat_colour(0.6));
  for (size_t i = 0; i < 10; ++i)
    for (size_t j = 0; j < i; ++j) CHECK(series_colour(i) != series_colour(j));
  CHECK(series_colour(10) == series_colour(0));
  CHECK(series_colour(0).size() == 7);
}
