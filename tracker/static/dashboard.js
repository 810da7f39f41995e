// pixelpost dashboard: reads /api/v1/stats and /api/v1/reputation with the session
// cookie and draws the funnel (down to engaged and unsubscribed), the rates, each
// configuration set's reputation, opens and clicks over time, the top links and why
// hits were counted as machines'. Plain DOM and SVG, no libraries. Text from the API
// only ever goes in through textContent and setAttribute, never as markup.
//
// document.body.dataset.state is "loading", "ready" or "error" (with dataset.error),
// and dataset.query the filters of what is shown, for tests and scripts to wait on.

"use strict";

(() => {
  const API = "/api/v1/stats";
  const REPUTATION_API = "/api/v1/reputation";
  const SVG = "http://www.w3.org/2000/svg";
  const TOP_LINKS = 10;
  const MAX_BUCKETS = 2000;
  const REASONS = {
    apple_mpp: "Apple Mail Privacy Protection",
    head_request: "HEAD request (link check)",
    security_scanner: "Security scanner or link preview",
    automated_client: "HTTP library or headless browser",
    no_user_agent: "No User-Agent",
    click_after_delivery: "Clicked right after delivery",
    link_burst: "Several links within a second",
  };

  const numbers = new Intl.NumberFormat();
  const count = (n) => numbers.format(n);
  const percent = (rate) => (rate === null || rate === undefined ? "–" : `${(rate * 100).toFixed(1)}%`);
  // Reputation rates to a hundredth of a percent: the complaint thresholds are tenths of one.
  const finePercent = (rate) => (rate === null || rate === undefined ? "–" : `${(rate * 100).toFixed(2)}%`);
  const thresholdPercent = (rate) => `${Number((rate * 100).toPrecision(6))}%`;
  const STATUS_TEXT = { healthy: "Healthy", warning: "Warning", at_risk: "At risk" };

  class ApiError extends Error {}

  // ---- DOM helpers -------------------------------------------------------------------

  function el(tag, { cls, text, attrs } = {}, children = []) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    for (const child of children) node.append(child);
    return node;
  }

  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function lookup(object, path) {
    return path.split(".").reduce((value, key) => (value == null ? undefined : value[key]), object);
  }

  function tooltip(node, text) {
    node.append(svg("title", {}, text));
    return node;
  }

  function chartSvg(width, height, label) {
    return svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  }

  // Machines' (or bots') share of a bar: hatched, after or above the people's.
  function machineRect(x, y, width, height) {
    return svg("rect", { x, y, width, height, fill: "url(#hatch)", class: "bar-machine" });
  }
  // ---- Fetching ----------------------------------------------------------------------

  async function stats(params, path = API) {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(params)) if (value) query.set(name, value);
    const response = await fetch(`${path}?${query}`, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (response.status === 401) {
      // The session ended (or the token changed): back to the login form.
      window.location.assign("/dashboard");
      throw new ApiError("Your session has ended; please sign in again.");
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      // not JSON: reported below by status
    }
    if (!response.ok) {
      const detail = body && typeof body.error === "string" ? body.error : response.statusText;
      throw new ApiError(`The statistics could not be loaded (HTTP ${response.status}): ${detail}`);
    }
    if (body === null) throw new ApiError("The statistics API did not answer with JSON.");
    return body;
  }

  // ---- Filters -----------------------------------------------------------------------

  const controls = {
    config_set: document.getElementById("filter-config-set"),
    tag: document.getElementById("filter-tag"),
    period: document.getElementById("filter-period"),
  };

  function currentFilters() {
    return {
      config_set: controls.config_set.value,
      tag: controls.tag.value,
      period: controls.period.value,
    };
  }

  function ensureOption(select, value, label) {
    if (![...select.options].some((option) => option.value === value)) {
      select.append(el("option", { text: label ?? value, attrs: { value } }));
    }
  }

  function restoreFilters() {
    const saved = new URLSearchParams(window.location.hash.slice(1));
    for (const [name, select] of Object.entries(controls)) {
      const value = saved.get(name);
      if (value === null) continue;
      if (name !== "period") ensureOption(select, value);
      if ([...select.options].some((option) => option.value === value)) select.value = value;
    }
  }

  function saveFilters(filters) {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(filters)) if (value) params.set(name, value);
    history.replaceState(null, "", `#${params}`);
  }

  async function loadChoices() {
    const [sets, tags] = await Promise.all([stats({ by: "config_set" }), stats({ by: "tag" })]);
    const fill = (select, groups) => {
      const keys = groups.map((group) => group.key).filter((key) => typeof key === "string");
      for (const key of keys.sort((a, b) => a.localeCompare(b))) ensureOption(select, key);
    };
    fill(controls.config_set, sets.groups);
    fill(controls.tag, tags.groups);
  }

  // ---- Figures -----------------------------------------------------------------------

  function showFigures(totals) {
    for (const node of document.querySelectorAll("dd[data-metric]")) {
      const name = node.dataset.metric;
      const value = lookup(totals, name);
      if (name.startsWith("rates.")) {
        node.textContent = percent(value);
      } else {
        node.textContent = value === undefined ? "–" : count(value);
      }
      node.dataset.value = value === undefined || value === null ? "" : String(value);
    }
  }

  // ---- Funnel ------------------------------------------------------------------------

  const FUNNEL = { labelWidth: 150, valueWidth: 230, rowHeight: 58, barHeight: 32 };
  const FUNNEL_ROWS = [
    { label: "Sent", sub: "messages accepted", path: "sent", cls: "bar-sent" },
    { label: "Delivered", sub: "by the upstream", path: "delivered", cls: "bar-sent", rate: ["delivery", "of sent"] },
    {
      label: "Opened",
      sub: "unique, by people",
      path: "opened.human.unique",
      cls: "bar-human",
      machine: ["opened.machine.unique", "machine"],
      rate: ["open", "of delivered"],
    },
    {
      label: "Clicked",
      sub: "unique, by people",
      path: "clicked.human.unique",
      cls: "bar-click",
      machine: ["clicked.bot.unique", "bot"],
      rate: ["click", "of delivered"],
    },
    // Opened or clicked: a click without an open is a message whose pixel was blocked.
    {
      label: "Engaged",
      sub: "opened or clicked",
      path: "engaged",
      cls: "bar-engaged",
      rate: ["engagement", "of delivered"],
    },
    {
      label: "Unsubscribed",
      sub: "unique, any way",
      path: "unsubscribed.unique",
      cls: "bar-unsubscribed",
      rate: ["unsubscribe", "of delivered"],
    },
  ];

  function metricText(path, value, cls) {
    return svg("tspan", { class: cls, "data-metric": path, "data-value": value }, count(value));
  }

  function drawFunnel(container, totals) {
    const width = Math.max(container.clientWidth, 480);
    const track = width - FUNNEL.labelWidth - FUNNEL.valueWidth;
    const widest = Math.max(
      1,
      ...FUNNEL_ROWS.map((row) => lookup(totals, row.path) + (row.machine ? lookup(totals, row.machine[0]) : 0)),
    );
    const scale = (value) => (value / widest) * track;
    const height = FUNNEL_ROWS.length * FUNNEL.rowHeight + 34;
    const chart = chartSvg(width, height, "Funnel");
    FUNNEL_ROWS.forEach((row, index) => {
      chart.append(...funnelRow(row, index * FUNNEL.rowHeight + 6, totals, width, scale));
    });
    chart.append(funnelAllHits(totals, height - 6));
    container.replaceChildren(chart);
  }

  // One stage of the funnel: its name, its bars, its numbers and, on the right, its rate.
  function funnelRow(row, top, totals, width, scale) {
    const middle = top + FUNNEL.barHeight / 2;
    const human = lookup(totals, row.path);
    const machine = row.machine ? lookup(totals, row.machine[0]) : 0;
    const { bars, end } = funnelBars(row, top, human, machine, scale);
    const nodes = [...funnelLabels(row, middle), ...bars, funnelValue(row, human, machine, end + 10, middle + 5)];
    const rate = row.rate ? lookup(totals, `rates.${row.rate[0]}`) : null;
    if (rate !== null) {
      nodes.push(svg("text", { x: width, y: middle + 5, "text-anchor": "end", class: "dim" }, `${percent(rate)} ${row.rate[1]}`));
    }
    return nodes;
  }

  function funnelLabels(row, middle) {
    return [
      svg("text", { x: 0, y: middle - 2, class: "label" }, row.label),
      svg("text", { x: 0, y: middle + 13, class: "dim" }, row.sub),
    ];
  }

  // The people's bar, then the machines' (or bots') after it; `end` is where they stop.
  function funnelBars(row, top, human, machine, scale) {
    const { labelWidth, barHeight } = FUNNEL;
    const bars = [];
    const humanWidth = scale(human);
    if (human > 0) {
      bars.push(
        tooltip(
          svg("rect", { x: labelWidth, y: top, width: Math.max(humanWidth, 2), height: barHeight, rx: 4, class: row.cls }),
          `${row.label}: ${count(human)}`,
        ),
      );
    }
    let end = labelWidth + humanWidth;
    if (row.machine && machine > 0) {
      const machineWidth = Math.max(scale(machine), 2);
      bars.push(
        tooltip(
          machineRect(end, top, machineWidth, barHeight),
          `${count(machine)} by ${row.machine[1] === "bot" ? "bots" : "machines"}`,
        ),
      );
      end += machineWidth;
    }
    return { bars, end };
  }

  // "3 + 2 machine": the people's count, and the machines' (or bots') when the stage has them.
  function funnelValue(row, human, machine, x, y) {
    const value = svg("text", { x, y });
    value.append(metricText(row.path, human, "value"));
    if (row.machine) {
      value.append(svg("tspan", { class: "dim", dx: 6 }, "+ "));
      value.append(metricText(row.machine[0], machine, "dim"));
      value.append(svg("tspan", { class: "dim" }, ` ${row.machine[1]}`));
    }
    return value;
  }

  // The line under the funnel: every hit counted, machines' and proxies' included.
  function funnelAllHits(totals, y) {
    const raw = svg("text", { x: 0, y, class: "dim" });
    raw.append(
      svg("tspan", {}, "All hits: "),
      metricText("opened.total", totals.opened.total, "value"),
      svg("tspan", {}, " opens ("),
      metricText("opened.machine.total", totals.opened.machine.total, ""),
      svg("tspan", {}, " by machines, "),
      metricText("opened.human.proxied", totals.opened.human.proxied, ""),
      svg("tspan", {}, " through mailbox proxies) · "),
      metricText("clicked.total", totals.clicked.total, "value"),
      svg("tspan", {}, " clicks ("),
      metricText("clicked.bot.total", totals.clicked.bot.total, ""),
      svg("tspan", {}, " by bots)"),
    );
    return raw;
  }
  // ---- Over time ---------------------------------------------------------------------

  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  function bucketKey(date, bucket) {
    const iso = date.toISOString();
    return bucket === "hour" ? `${iso.slice(0, 13)}:00:00Z` : iso.slice(0, 10);
  }

  function bucketStart(text, bucket) {
    const date = new Date(bucket === "hour" ? text : `${text.slice(0, 10)}T00:00:00Z`);
    if (bucket === "hour") date.setUTCMinutes(0, 0, 0);
    else date.setUTCHours(0, 0, 0, 0);
    return date;
  }

  // Every bucket of the period, empty ones included, so that time reads evenly.
  function buckets(response, bucket) {
    const byKey = new Map(response.groups.map((group) => [group.key, group]));
    const keys = response.groups.map((group) => group.key).sort();
    const first = response.since ?? keys[0];
    const last = response.until ?? keys[keys.length - 1];
    if (!first || !last) return [];
    const step = bucket === "hour" ? 3600e3 : 86400e3;
    const start = bucketStart(first, bucket);
    let end = bucketStart(last, bucket);
    if (response.until && bucket === "hour" && new Date(response.until).getTime() === end.getTime()) {
      end = new Date(end.getTime() - step); // an end on the hour is not part of the period
    }
    if ((end - start) / step > MAX_BUCKETS || end < start) {
      return keys.map((key) => ({ key, date: bucketStart(key, bucket), group: byKey.get(key) }));
    }
    const result = [];
    for (let time = start.getTime(); time <= end.getTime(); time += step) {
      const date = new Date(time);
      const key = bucketKey(date, bucket);
      result.push({ key, date, group: byKey.get(key) });
    }
    return result;
  }

  function niceStep(max, ticks) {
    const raw = Math.max(max, 1) / ticks;
    const power = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].find((factor) => factor * power >= raw) * power;
    return Math.max(1, Math.ceil(step));
  }

  const dayLabel = (date) => `${MONTHS[date.getUTCMonth()]} ${date.getUTCDate()}`;
  const hourLabel = (date) => `${String(date.getUTCHours()).padStart(2, "0")}:00`;

  function drawSeries(container, series, bucket, kind) {
    const parts =
      kind === "opened"
        ? { human: "opened.human.total", other: "opened.machine.total", otherName: "machine", cls: "bar-human" }
        : { human: "clicked.human.total", other: "clicked.bot.total", otherName: "bot", cls: "bar-click" };
    const points = series.map(({ key, date, group }) => ({
      key,
      date,
      human: group ? lookup(group, parts.human) : 0,
      other: group ? lookup(group, parts.other) : 0,
    }));
    if (points.length === 0 || points.every((point) => point.human + point.other === 0)) {
      container.replaceChildren(el("p", { cls: "empty", text: `No ${kind === "opened" ? "opens" : "clicks"} in this period.` }));
      return;
    }
    const frame = seriesFrame(Math.max(container.clientWidth, 320), points, bucket);
    const chart = chartSvg(frame.width, frame.height, kind === "opened" ? "Opens over time" : "Clicks over time");
    chart.append(seriesAxes(points, bucket, frame), seriesBars(points, bucket, parts, frame));
    container.replaceChildren(chart);
  }

  // Sizes and scales of a chart `width` wide: the value axis goes in round steps to the
  // first above the peak, and each bucket gets a band of the width.
  function seriesFrame(width, points, bucket) {
    const height = 220;
    const margin = { top: 10, right: 8, bottom: bucket === "hour" ? 40 : 26, left: 44 };
    const plotWidth = width - margin.left - margin.right;
    const plotHeight = height - margin.top - margin.bottom;
    const peak = Math.max(...points.map((point) => point.human + point.other));
    const step = niceStep(peak, 4);
    const top = Math.ceil(peak / step) * step;
    const y = (value) => margin.top + plotHeight - (value / top) * plotHeight;
    const band = plotWidth / points.length;
    const barWidth = Math.max(1, Math.min(band * 0.72, 36));
    return { width, height, margin, plotWidth, plotHeight, step, top, y, band, barWidth };
  }

  function seriesAxes(points, bucket, frame) {
    const axis = svg("g", { class: "axis" });
    axis.append(...valueTicks(frame), ...timeLabels(points, bucket, frame));
    return axis;
  }

  // A grid line and its count at each step of the value axis, the baseline at zero.
  function valueTicks({ width, margin, step, top, y }) {
    const ticks = [];
    for (let value = 0; value <= top; value += step) {
      ticks.push(
        svg("line", { x1: margin.left, x2: width - margin.right, y1: y(value), y2: y(value), class: value ? "grid-line" : "baseline" }),
        svg("text", { x: margin.left - 6, y: y(value) + 4, "text-anchor": "end" }, count(value)),
      );
    }
    return ticks;
  }

  // Under every few buckets, as many as fit. Days are labelled with their date; hours with
  // their time, and with the date under the first of each day.
  function timeLabels(points, bucket, { margin, plotWidth, plotHeight, band }) {
    const every = Math.max(1, Math.ceil(points.length / Math.max(1, Math.floor(plotWidth / 64))));
    const labels = [];
    let labelledDay = null;
    points.forEach((point, index) => {
      if (index % every !== 0) return;
      const x = margin.left + band * (index + 0.5);
      const y = margin.top + plotHeight + 16;
      if (bucket !== "hour") {
        labels.push(svg("text", { x, y, "text-anchor": "middle" }, dayLabel(point.date)));
        return;
      }
      labels.push(svg("text", { x, y, "text-anchor": "middle" }, hourLabel(point.date)));
      const day = point.key.slice(0, 10);
      if (day !== labelledDay) {
        labels.push(svg("text", { x, y: y + 14, "text-anchor": "middle" }, dayLabel(point.date)));
        labelledDay = day;
      }
    });
    return labels;
  }

  function seriesBars(points, bucket, parts, frame) {
    const { margin, band, barWidth } = frame;
    const bars = svg("g");
    points.forEach((point, index) => {
      if (point.human + point.other === 0) return;
      const x = margin.left + band * index + (band - barWidth) / 2;
      bars.append(seriesBar(point, x, bucket, parts, frame));
    });
    return bars;
  }

  // One bucket's stack: the people's bar, the machines' (or bots') on top, and a tooltip.
  function seriesBar(point, x, bucket, parts, { y, barWidth }) {
    const { human, other } = point;
    const group = svg("g", { "data-key": point.key, "data-human": human, "data-other": other });
    if (human > 0) {
      group.append(svg("rect", { x, y: y(human), width: barWidth, height: y(0) - y(human), class: parts.cls }));
    }
    if (other > 0) {
      group.append(machineRect(x, y(human + other), barWidth, y(human) - y(human + other)));
    }
    const when = bucket === "hour" ? `${point.key.slice(0, 10)} ${point.key.slice(11, 16)} UTC` : point.key;
    return tooltip(group, `${when}: ${count(human)} human, ${count(other)} ${parts.otherName}`);
  }

  // ---- Top links and reasons ---------------------------------------------------------

  function meter(human, other, widest) {
    const bar = el("div", { cls: "meter" });
    const humanPart = el("span", { cls: "human" });
    const otherPart = el("span", { cls: "machine" });
    humanPart.style.width = `${(human / widest) * 100}%`;
    otherPart.style.width = `${(other / widest) * 100}%`;
    bar.append(humanPart, otherPart);
    return bar;
  }

  function showLinks(response) {
    const body = document.getElementById("links");
    const groups = response.groups.slice(0, TOP_LINKS);
    if (groups.length === 0) {
      body.replaceChildren(el("tr", {}, [el("td", { cls: "empty", text: "No clicks in this period.", attrs: { colspan: "4" } })]));
      return;
    }
    const widest = Math.max(1, ...groups.map((group) => group.clicked.total));
    body.replaceChildren(
      ...groups.map((group) => {
        const url = String(group.key);
        const safe = /^https?:\/\//i.test(url);
        const link = safe
          ? el("a", { text: url, attrs: { href: url, target: "_blank", rel: "noopener noreferrer" } })
          : el("span", { text: url });
        const { human, bot } = group.clicked;
        return el("tr", { attrs: { "data-link": url } }, [
          el("td", { cls: "url", attrs: { title: url } }, [link]),
          el("td", { cls: "num" }, [
            el("strong", { text: count(human.unique), attrs: { "data-field": "human.unique" } }),
            el("span", { cls: "muted", text: " / " }),
            el("span", { text: count(human.total), attrs: { "data-field": "human.total" } }),
          ]),
          el("td", { cls: "num", text: count(bot.total), attrs: { "data-field": "bot.total" } }),
          el("td", {}, [meter(human.total, bot.total, widest)]),
        ]);
      }),
    );
  }

  function showReasons(list, reasons, total) {
    const entries = Object.entries(reasons || {}).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
    if (entries.length === 0) {
      list.replaceChildren(el("li", { cls: "none", text: "None in this period." }));
      return;
    }
    const widest = Math.max(1, total, ...entries.map(([, n]) => n));
    list.replaceChildren(
      ...entries.map(([reason, n]) =>
        el("li", { attrs: { "data-reason": reason } }, [
          el("div", { cls: "row" }, [
            el("span", { text: REASONS[reason] ?? reason.replaceAll("_", " "), attrs: { title: reason } }),
            el("span", { cls: "count", text: count(n), attrs: { "data-value": String(n) } }),
          ]),
          meter(0, n, widest),
        ]),
      ),
    );
  }

  // ---- Reputation --------------------------------------------------------------------

  function statusBadge(field, status) {
    return el("span", {
      cls: `status ${status}`,
      text: STATUS_TEXT[status] ?? status,
      attrs: { "data-field": field, "data-status": status },
    });
  }

  // One row: a set's (or all mail's) two rates, their parts, and their statuses in words.
  function reputationRow(name, figures, attrs, cls) {
    const { bounce, complaint } = figures;
    const cell = (field, text) => el("td", { cls: "num", text, attrs: { "data-field": field } });
    return el("tr", { cls, attrs }, [
      el("th", { text: name, attrs: { scope: "row" } }),
      cell("bounce.sent", count(bounce.sent)),
      cell("bounce.permanent", count(bounce.permanent)),
      cell("bounce.rate", finePercent(bounce.rate)),
      el("td", {}, [statusBadge("bounce.status", bounce.status)]),
      cell("complaint.delivered", count(complaint.delivered)),
      cell("complaint.complained", count(complaint.complained)),
      cell("complaint.rate", finePercent(complaint.rate)),
      el("td", {}, [statusBadge("complaint.status", complaint.status)]),
    ]);
  }

  function showReputation(response) {
    const body = document.getElementById("reputation");
    const sets = response.config_sets;
    const rows = sets.map((entry) =>
      reputationRow(entry.config_set ?? "(no configuration set)", entry, { "data-config-set": entry.config_set ?? "" }),
    );
    if (sets.length > 1) rows.push(reputationRow("All mail", response.total, { "data-total": "" }, "total"));
    if (rows.length === 0) {
      rows.push(el("tr", {}, [el("td", { cls: "empty", text: "No mail in this window.", attrs: { colspan: "9" } })]));
    }
    body.replaceChildren(...rows);
    const { bounce, complaint } = response.thresholds;
    document.getElementById("reputation-window").textContent =
      `Over the last ${response.window}, rolling (since ${response.since.replace("T", " ").replace("Z", "")} UTC); ` +
      "the period and tag filters do not apply.";
    document.getElementById("reputation-thresholds").textContent =
      `Bounce rate = hard (Permanent) bounces / sent: warning from ${thresholdPercent(bounce.warning)}, ` +
      `at risk from ${thresholdPercent(bounce.at_risk)}. ` +
      `Complaint rate = complaints / delivered: warning from ${thresholdPercent(complaint.warning)}, ` +
      `at risk from ${thresholdPercent(complaint.at_risk)}.`;
  }

  // ---- Page --------------------------------------------------------------------------

  const message = document.getElementById("message");
  let generation = 0;
  let shown = null;

  function describeRange(response) {
    const when = (text) => text.replace("T", " ").replace(/:00Z$|Z$/, "");
    const since = response.since ? when(response.since) : "the beginning";
    return `From ${since} to ${when(response.until)} UTC`;
  }

  function render() {
    if (!shown) return;
    const { series, links, bucket, reputation } = shown;
    showFigures(series.totals);
    showReputation(reputation);
    drawFunnel(document.getElementById("funnel"), series.totals);
    const points = buckets(series, bucket);
    drawSeries(document.getElementById("opens-chart"), points, bucket, "opened");
    drawSeries(document.getElementById("clicks-chart"), points, bucket, "clicked");
    showLinks(links);
    showReasons(document.getElementById("open-reasons"), series.totals.opened.machine.reasons, series.totals.opened.machine.total);
    showReasons(document.getElementById("click-reasons"), series.totals.clicked.bot.reasons, series.totals.clicked.bot.total);
    document.getElementById("range").textContent = describeRange(series);
  }

  async function refresh() {
    const current = ++generation;
    const filters = currentFilters();
    saveFilters(filters);
    const params = {
      config_set: filters.config_set,
      tag: filters.tag,
      since: filters.period === "all" ? "" : filters.period,
    };
    const bucket = filters.period === "24h" ? "hour" : "day";
    document.body.dataset.state = "loading";
    try {
      const [series, links, reputation] = await Promise.all([
        stats({ ...params, by: bucket }),
        stats({ ...params, by: "link" }),
        stats({ config_set: filters.config_set }, REPUTATION_API),
      ]);
      if (current !== generation) return; // a newer choice of filters is on its way
      shown = { series, links, bucket, reputation };
      render();
      message.hidden = true;
      const query = new URLSearchParams();
      for (const [name, value] of Object.entries(params)) if (value) query.set(name, value);
      document.body.dataset.query = query.toString();
      delete document.body.dataset.error;
      document.body.dataset.state = "ready";
    } catch (error) {
      if (current !== generation) return;
      fail(error);
    }
  }

  function fail(error) {
    const text = error instanceof ApiError ? error.message : `The dashboard failed: ${error}`;
    message.textContent = text;
    message.hidden = false;
    document.body.dataset.error = text;
    document.body.dataset.state = "error";
  }

  let resizing = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(render, 150);
  });
  for (const select of Object.values(controls)) select.addEventListener("change", refresh);

  restoreFilters();
  loadChoices().then(restoreFilters, fail);
  refresh();
})();
