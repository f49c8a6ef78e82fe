/* A small SVG chart for the operator console: grouped bars and lines over days.
 * Built with DOM calls only (no HTML parsing, no inline style), so the page's strict
 * Content-Security-Policy holds. Charts.draw(container, {title, labels, series, unit}),
 * series: [{name, values, kind: "bar" | "line", color}]. */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var W = 720, H = 240, LEFT = 64, RIGHT = 16, TOP = 28, BOTTOM = 40;

  function el(name, attributes, text) {
    var node = document.createElementNS(NS, name);
    Object.keys(attributes || {}).forEach(function (key) { node.setAttribute(key, attributes[key]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function niceMax(value) {
    if (value <= 0) { return 1; }
    var power = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * power >= value) { return steps[i] * power; }
    }
    return 10 * power;
  }

  function draw(container, spec) {
    var all = [];
    spec.series.forEach(function (s) { all = all.concat(s.values); });
    var high = Math.max.apply(null, all.concat([0])), low = Math.min.apply(null, all.concat([0]));
    var top = high > 0 || low >= 0 ? niceMax(high) : 0;
    var bottom = low < 0 ? -niceMax(-low) : 0;
    var plotW = W - LEFT - RIGHT, plotH = H - TOP - BOTTOM;
    var n = Math.max(spec.labels.length, 1);
    var step = plotW / n;
    function y(v) { return TOP + plotH * (top - v) / (top - bottom); }
    var fmt = spec.format || function (v) { return String(Math.round(v * 100) / 100); };

    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, "class": "chart", role: "img",
                         "aria-label": spec.title, "data-chart": spec.id || ""});
    svg.appendChild(el("title", {}, spec.title));
    svg.appendChild(el("text", {x: LEFT, y: 16, "class": "chart-title"}, spec.title));
    [top, (top + bottom) / 2, bottom, 0].forEach(function (v) {
      svg.appendChild(el("line", {x1: LEFT, x2: W - RIGHT, y1: y(v), y2: y(v),
                                  stroke: v === 0 ? "#555" : "#ddd", "stroke-width": 1}));
      svg.appendChild(el("text", {x: LEFT - 6, y: y(v) + 4, "text-anchor": "end", "class": "tick"}, fmt(v)));
    });
    var bars = spec.series.filter(function (s) { return s.kind !== "line"; });
    var barW = Math.max(step * 0.8 / Math.max(bars.length, 1), 1);
    bars.forEach(function (s, b) {
      s.values.forEach(function (v, i) {
        var x = LEFT + i * step + step * 0.1 + b * barW;
        var rect = el("rect", {x: x, width: barW, y: Math.min(y(v), y(0)), height: Math.abs(y(0) - y(v)),
                               fill: s.color, "class": "bar"});
        rect.appendChild(el("title", {}, spec.labels[i] + " " + s.name + ": " + fmt(v)));
        svg.appendChild(rect);
      });
    });
    spec.series.filter(function (s) { return s.kind === "line"; }).forEach(function (s) {
      var points = s.values.map(function (v, i) { return (LEFT + i * step + step / 2) + "," + y(v); });
      svg.appendChild(el("polyline", {points: points.join(" "), fill: "none", stroke: s.color,
                                      "stroke-width": 2, "class": "line"}));
    });
    var every = Math.ceil(n / 8);
    spec.labels.forEach(function (label, i) {
      if (i % every === 0 || (i === n - 1 && i % every >= every / 2)) {
        svg.appendChild(el("text", {x: LEFT + i * step + step / 2, y: H - BOTTOM + 16,
                                    "text-anchor": "middle", "class": "tick"}, label.slice(5)));
      }
    });
    var lx = LEFT;
    spec.series.forEach(function (s) {
      svg.appendChild(el("rect", {x: lx, y: H - 14, width: 10, height: 10, fill: s.color}));
      var label = el("text", {x: lx + 14, y: H - 5, "class": "legend"}, s.name);
      svg.appendChild(label);
      lx += 24 + s.name.length * 7;
    });
    container.appendChild(svg);
    return svg;
  }

  window.Charts = {draw: draw};
}());
