// The dashboard's three charts of a sale's last 10 minutes (line length, admissions per second,
// orders per second), drawn with uPlot (vendored under /admin/static/vendor/uplot, MIT). The
// figures come from dashboard.js's ring of samples: {t (unix s), waiting, admitted, orders}.
// The rates are deltas of the counters between samples, so they need no server support and a
// missed sample only widens one step.
(() => {
  "use strict";
  const HEIGHT = 180;
  const MIN_SPAN_S = 10; // the time axis of a first sample or two
  const RATE = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  const CLOCK = new Intl.DateTimeFormat("en-GB", {
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
  const clock = (s) => CLOCK.format(new Date(s * 1000));

  // Per second between samples; a counter that went down (it should not) counts as zero.
  function rates(t, counter) {
    const out = [null];
    for (let i = 1; i < t.length; i++) {
      const dt = t[i] - t[i - 1];
      out.push(dt > 0 ? Math.max(0, counter[i] - counter[i - 1]) / dt : null);
    }
    return out;
  }

  const SPECS = [
    { id: "chart-line", label: "waiting", stroke: "#0056b3", data: (r) => r.waiting },
    { id: "chart-admissions", label: "admitted/s", stroke: "#146c2e",
      data: (r) => rates(r.t, r.admitted) },
    { id: "chart-orders", label: "orders/s", stroke: "#8a4b00", data: (r) => rates(r.t, r.orders) },
  ];

  const element = (id) => document.getElementById(id);
  const caption = (id) => element(id).parentElement.querySelector("[data-field=now]");
  const width = (el) => Math.max(240, Math.floor(el.clientWidth || 320));

  class Charts {
    constructor() {
      this.plots = null;
      this.xRange = [0, MIN_SPAN_S];
      window.addEventListener("resize", () => this.resize());
    }

    create() {
      this.plots = SPECS.map((spec) => {
        const el = element(spec.id);
        return new uPlot({
          width: width(el),
          height: HEIGHT,
          // The x axis spans the samples, at least MIN_SPAN_S (uPlot alone stretches a
          // lone first sample over 1,000 days). From zero on the y axis, so that a flat line
          // does not look like a cliff.
          scales: {
            x: { time: true, range: () => this.xRange },
            y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] },
          },
          series: [{}, { label: spec.label, stroke: spec.stroke, width: 2, spanGaps: true }],
          // One line of local time per tick (uPlot's own two-line labels overlap at a
          // minute's turn), at least 70 px apart.
          axes: [{ values: (u, splits) => splits.map(clock), space: 70 }, { size: 60 }],
          legend: { show: false }, // the caption says what the line is and its latest value
        }, [[], []], el);
      });
    }

    draw(ring) {
      if (!ring.t.length || typeof uPlot === "undefined") return;
      if (!this.plots) this.create();
      const last = ring.t[ring.t.length - 1];
      this.xRange = [Math.min(ring.t[0], last - MIN_SPAN_S), last];
      SPECS.forEach((spec, i) => {
        const ys = spec.data(ring);
        this.plots[i].setData([ring.t.slice(), ys]);
        element(spec.id).dataset.points = String(ring.t.length);
        const now = ys[ys.length - 1];
        caption(spec.id).textContent = now === null ? "—" : RATE.format(now);
      });
    }

    // Another sale is shown: its charts start from its own samples.
    clear() {
      if (this.plots) this.plots.forEach((plot) => plot.destroy());
      this.plots = null;
      for (const spec of SPECS) {
        element(spec.id).dataset.points = "0";
        caption(spec.id).textContent = "—";
      }
    }

    resize() {
      if (!this.plots) return;
      SPECS.forEach((spec, i) => {
        this.plots[i].setSize({ width: width(element(spec.id)), height: HEIGHT });
      });
    }
  }

  window.FS_CHARTS = { Charts, clock };
})();
