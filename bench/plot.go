package main

import (
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

var productColors = map[string]color.RGBA{
	prodEdgeproxy: {R: 0xe4, G: 0x57, B: 0x1e, A: 0xff},
	prodNftables:  {R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff},
	prodHAProxy:   {R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	prodNginx:     {R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
}

var productLabels = map[string]string{
	prodEdgeproxy: "edgeproxy (fastl4 / https)",
	prodNftables:  "nftables DNAT+SNAT",
	prodHAProxy:   "HAProxy (tcp / tls)",
	prodNginx:     "nginx (stream / tls)",
}

// chartValues are the products' medians for a metric, normalised so that
// the best candidate is 1 (higher is better for every bar).
func (r *results) chartValues(d metricDef) (map[string]float64, float64, bool) {
	ph, _ := r.scenarioOf(d.scenario)
	if ph == nil {
		return nil, 0, false
	}
	med := map[string]float64{}
	charted := map[string]bool{}
	for _, c := range r.layerCands(ph.layer) {
		// One bar per product: its first candidate (nftables with the
		// settings XDP needs, not its veth-defaults variant).
		if charted[c.product] {
			continue
		}
		charted[c.product] = true
		if s, ok := r.stat(d.id, c.name); ok {
			med[c.product] = s.median
		}
	}
	if len(med) == 0 {
		return nil, 0, false
	}
	best := 0.0
	first := true
	for _, v := range med {
		if first || (d.higherBetter && v > best) || (!d.higherBetter && v < best) {
			best, first = v, false
		}
	}
	out := map[string]float64{}
	for p, v := range med {
		switch {
		case d.higherBetter && best > 0:
			out[p] = v / best
		case !d.higherBetter && v > 0:
			out[p] = best / v
		default:
			out[p] = 1
		}
	}
	return out, best, true
}

func writeChart(path string, r *results) error {
	type group struct {
		label string
		vals  map[string]float64
	}
	var groups []group
	for _, d := range metricDefs {
		if d.chart == "" {
			continue
		}
		vals, best, ok := r.chartValues(d)
		if !ok {
			continue
		}
		groups = append(groups, group{label: fmt.Sprintf("%s\nbest %s\n%s", d.chart, fmtNum(best, d.prec), d.cunit), vals: vals})
	}
	if len(groups) == 0 {
		return fmt.Errorf("write chart: no measurement to plot")
	}
	p := plot.New()
	p.Title.Text = "edgeproxy and its peers: median of each scenario relative to the best candidate (1 = best; lower-is-better figures inverted)"
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.Y.Label.Text = "relative to the best (taller is better)"
	p.Y.Min, p.Y.Max = 0, 1.3
	p.Y.Tick.Marker = plot.ConstantTicks([]plot.Tick{{Value: 0, Label: "0"}, {Value: 0.25, Label: "0.25"}, {Value: 0.5, Label: "0.5"}, {Value: 0.75, Label: "0.75"}, {Value: 1, Label: "1"}})
	grid := plotter.NewGrid()
	grid.Vertical.Color = nil
	p.Add(grid)

	present := map[string]bool{}
	for _, g := range groups {
		for p := range g.vals {
			present[p] = true
		}
	}
	var prods []string
	for _, pr := range products {
		if present[pr] {
			prods = append(prods, pr)
		}
	}
	barW := vg.Points(14)
	for i, pr := range prods {
		vals := make(plotter.Values, len(groups))
		for j, g := range groups {
			vals[j] = g.vals[pr]
		}
		bars, err := plotter.NewBarChart(vals, barW)
		if err != nil {
			return fmt.Errorf("write chart: %w", err)
		}
		bars.Color = productColors[pr]
		bars.LineStyle.Width = 0
		bars.Offset = barW * vg.Length(float64(i)-float64(len(prods)-1)/2)
		p.Add(bars)
		p.Legend.Add(productLabels[pr], bars)
	}
	for _, c := range r.candidates {
		if c.product == prodEdgeproxy && !present[prodEdgeproxy] {
			p.Legend.Add("edgeproxy: not available in this run (see latest.md)")
			break
		}
	}
	labels := make([]string, len(groups))
	for i, g := range groups {
		labels[i] = g.label
	}
	p.NominalX(labels...)
	p.X.Tick.Label.Font.Size = vg.Points(10)
	p.Legend.Top = true
	p.Legend.Left = false
	p.Legend.XOffs = -vg.Points(5)
	p.Legend.TextStyle.Font.Size = vg.Points(11)
	width := vg.Length(len(groups)) * barW * vg.Length(len(prods)+2)
	width = max(width, vg.Length(len(groups))*1.15*vg.Inch, 8*vg.Inch)
	if err := p.Save(width, 6*vg.Inch, path); err != nil {
		return fmt.Errorf("write chart: %w", err)
	}
	return nil
}
