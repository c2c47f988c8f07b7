// Small SVG charts written for these pages (no library): lines over steps, and bars.
import { el } from "/ui/static/app.js";

const W = 360, H = 190, L = 46, R = 10, T = 10, B = 24;
const COLORS = ["#2f5bea", "#e4572e", "#1b7f3b", "#8e44ad"];

function ticks(low, high, count = 4, whole = false) {
  if (low === high) return [low];
  const step = (high - low) / count;
  const values = Array.from({length: count + 1}, (_, i) => low + i * step);
  return whole ? [...new Set(values.map(Math.round))] : values;
}

/** A tick label with as many decimals as the axis' span needs to tell ticks apart. */
function label(value, span) {
  const a = Math.abs(value);
  if (a !== 0 && (a < 0.01 || a >= 1e5)) return value.toExponential(1);
  const decimals = Math.min(6, Math.max(0, Math.ceil(-Math.log10(span / 4)) + 1));
  return value.toFixed(decimals);
}

/** A chart box: title + SVG; `series` is [{name, points: [[x, y], ...]}]. The SVG's
 *  data-points attribute counts the points drawn (the browser tests read it). */
export function lineChart(title, series) {
  const all = series.flatMap(s => s.points);
  const svg = el("svg:svg", {viewBox: `0 0 ${W} ${H}`, "data-points": all.length, role: "img", "aria-label": title});
  if (all.length) {
    const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
    let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
    const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R);
    const sy = y => H - B - (y - y0) / (y1 - y0) * (H - T - B);
    for (const t of ticks(y0, y1)) {
      svg.append(el("svg:line", {x1: L, x2: W - R, y1: sy(t), y2: sy(t), stroke: "#e5e8ee"}));
      svg.append(el("svg:text", {x: L - 4, y: sy(t) + 3, "text-anchor": "end", "font-size": 9, fill: "#5d6778"}, label(t, y1 - y0)));
    }
    for (const t of ticks(x0, x1, 4, true)) {
      svg.append(el("svg:text", {x: sx(t), y: H - 8, "text-anchor": "middle", "font-size": 9, fill: "#5d6778"}, t));
    }
    series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      if (s.points.length > 1) {
        svg.append(el("svg:polyline", {fill: "none", stroke: color, "stroke-width": 1.6,
          points: s.points.map(p => `${sx(p[0])},${sy(p[1])}`).join(" ")}));
      }
      for (const p of s.points) {
        svg.append(el("svg:circle", {cx: sx(p[0]), cy: sy(p[1]), r: s.points.length > 60 ? 1.2 : 2.4, fill: color},
          el("svg:title", {}, `${s.name} step ${p[0]}: ${p[1]}`)));
      }
    });
  } else {
    svg.append(el("svg:text", {x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#9aa6bb", "font-size": 12}, "no points yet"));
  }
  const legend = series.length > 1
    ? series.map((s, i) => el("span", {class: "muted"}, ` ● ${s.name}`)) : [];
  const box = el("div", {class: "chart"}, el("div", {class: "title"}, title, ...legend), svg);
  series.forEach((s, i) => { if (legend[i]) legend[i].style.color = COLORS[i % COLORS.length]; });
  return box;
}

/** A histogram: bins [{low, high, count}], with a dashed line at `marker` (max_length). */
export function barChart(title, bins, marker) {
  const svg = el("svg:svg", {viewBox: `0 0 ${W} ${H}`, "data-bars": bins.length, role: "img", "aria-label": title});
  if (bins.length) {
    const top = Math.max(...bins.map(b => b.count));
    const x0 = bins[0].low, x1 = bins[bins.length - 1].high;
    const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R);
    const sy = y => H - B - y / top * (H - T - B);
    for (const t of ticks(0, top, 4, true)) {
      svg.append(el("svg:line", {x1: L, x2: W - R, y1: sy(t), y2: sy(t), stroke: "#e5e8ee"}));
      svg.append(el("svg:text", {x: L - 4, y: sy(t) + 3, "text-anchor": "end", "font-size": 9, fill: "#5d6778"}, t));
    }
    for (const b of bins) {
      svg.append(el("svg:rect", {x: sx(b.low) + 0.5, y: sy(b.count), width: Math.max(1, sx(b.high) - sx(b.low) - 1),
        height: H - B - sy(b.count), fill: "#2f5bea"}, el("svg:title", {}, `${b.low}-${b.high - 1} tokens: ${b.count}`)));
    }
    for (const t of ticks(x0, x1, 4, true)) {
      svg.append(el("svg:text", {x: sx(t), y: H - 8, "text-anchor": "middle", "font-size": 9, fill: "#5d6778"}, t));
    }
    if (marker && marker > x1) {
      svg.append(el("svg:text", {x: W - R, y: T + 9, "text-anchor": "end", "font-size": 9, fill: "#1b7f3b"}, `all under max_length ${marker}`));
    } else if (marker) {
      svg.append(el("svg:line", {x1: sx(marker), x2: sx(marker), y1: T, y2: H - B, stroke: "#e4572e", "stroke-dasharray": "4 3"}));
      svg.append(el("svg:text", {x: sx(marker) - 3, y: T + 9, "text-anchor": "end", "font-size": 9, fill: "#e4572e"}, `max_length ${marker}`));
    }
  }
  return el("div", {class: "chart"}, el("div", {class: "title"}, title), svg);
}
