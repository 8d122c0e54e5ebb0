import Foundation

/// Renders a flicker measurement as a table, JSON, CSV or an SVG chart.
public struct FlickerReport {
    public let input: String
    public let summary: FlickerAnalyzer.Summary
    public let records: [FlickerAnalyzer.FrameRecord]

    /// E_warp between consecutive frames and against the first (nil when not measured).
    public let ewarp: (consecutive: Double, first: Double)?
    /// The level drift from the guide (nil without one).
    public let levelDrift: Double?

    public init(input: String, analyzer: FlickerAnalyzer, warping: WarpingErrorMeter? = nil, drift: LevelDrift? = nil) {
        self.input = input
        self.summary = analyzer.summary
        self.records = analyzer.records
        self.ewarp = warping.map { ($0.ewarp, $0.ewarpFirst) }
        self.levelDrift = drift?.value
    }

    /// A table for people.
    public var table: String {
        var lines = [
            "flicker of \(input)  (\(summary.frames) frame\(summary.frames == 1 ? "" : "s"), \(summary.width)×\(summary.height))",
            row("mean luma", summary.meanLuma, "8-bit"),
            row("brightness flicker", summary.brightnessFlicker, "mean |ΔY|, 8-bit"),
            row("largest luma jump", summary.maxBrightnessChange, "max |ΔY|, 8-bit"),
            row("flicker index", summary.flickerIndex, "0 = steady"),
            row("percent flicker", summary.percentFlicker, "%"),
            "temporal difference, mean |x_t − x_t−1| after s×s pooling (8-bit):",
        ]
        for scale in FlickerAnalyzer.scales {
            if let value = summary.temporalDifference[scale] { lines.append(row("  s = \(scale)", value, "")) }
        }
        if let ewarp {
            lines.append(row("E_warp", ewarp.consecutive * 1000, "×10⁻³, consecutive frames"))
            lines.append(row("E_warp, first frame", ewarp.first * 1000, "×10⁻³, against frame 0"))
        }
        if let levelDrift { lines.append(row("level drift", levelDrift, "max |mean ΔY| from the guide over \(LevelDrift.window) frames, 8-bit")) }
        return lines.joined(separator: "\n") + "\n"
    }

    private func row(_ name: String, _ value: Double, _ unit: String) -> String {
        let padded = name.padding(toLength: 22, withPad: " ", startingAt: 0)
        let number = String(format: "%10.4f", value)
        return unit.isEmpty ? "\(padded)\(number)" : "\(padded)\(number)  \(unit)"
    }

    /// One JSON object: frames, brightness_flicker, flicker_index, percent_flicker,
    /// temporal_difference (keyed by scale) and more.
    public var json: String {
        var tdiff: [String: Double] = [:]
        for (scale, value) in summary.temporalDifference { tdiff[String(scale)] = value }
        var object: [String: Any] = [
            "input": input,
            "frames": summary.frames,
            "width": summary.width,
            "height": summary.height,
            "mean_luma": summary.meanLuma,
            "brightness_flicker": summary.brightnessFlicker,
            "max_brightness_change": summary.maxBrightnessChange,
            "flicker_index": summary.flickerIndex,
            "percent_flicker": summary.percentFlicker,
            "temporal_difference": tdiff,
        ]
        if let ewarp {
            object["ewarp"] = ewarp.consecutive
            object["ewarp_first"] = ewarp.first
        }
        if let levelDrift { object["level_drift"] = levelDrift }
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    /// The per-frame series, one row per frame.
    public var csv: String {
        var out = "frame,seconds,mean_luma,luma_change," + FlickerAnalyzer.scales.map { "tdiff_\($0)" }.joined(separator: ",") + "\n"
        for r in records {
            var fields = [String(r.index), String(format: "%.6f", r.seconds), String(format: "%.6f", r.meanLuma),
                          r.lumaChange.map { String(format: "%.6f", $0) } ?? ""]
            fields += FlickerAnalyzer.scales.indices.map { k in
                k < r.temporalDifference.count ? String(format: "%.6f", r.temporalDifference[k]) : ""
            }
            out += fields.joined(separator: ",") + "\n"
        }
        return out
    }

    /// An SVG chart: mean luma per frame on top, |ΔY| and the temporal difference at a fine
    /// and a coarse scale below, on a shared frame axis.
    public var svg: String {
        let width = 900.0, panelHeight = 220.0, margin = (left: 70.0, right: 20.0, top: 40.0, gap: 60.0)
        let plotWidth = width - margin.left - margin.right
        let height = margin.top + 2 * panelHeight + margin.gap + 50
        // Frames by their index in the input: a `--frames` segment's axis starts at its first.
        let first = records.first?.index ?? 0, n = max((records.last?.index ?? 0) - first, 1)
        func x(_ i: Int) -> Double { margin.left + plotWidth * Double(i - first) / Double(n) }
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(margin.left)" y="22" font-size="15" font-weight="bold">Flicker of \(escape((input as NSString).lastPathComponent)): \(summary.frames) frame\(summary.frames == 1 ? "" : "s"), brightness flicker \(String(format: "%.3f", summary.brightnessFlicker)), flicker index \(String(format: "%.4f", summary.flickerIndex))</text>

        """
        func panel(top: Double, title: String, series: [(label: String, color: String, values: [(Int, Double)])]) {
            let all = series.flatMap { $0.values.map(\.1) }
            var lo = all.min() ?? 0, hi = all.max() ?? 1
            if hi - lo < 1e-6 { lo -= 1; hi += 1 }
            let pad = (hi - lo) * 0.08
            let nonNegative = lo >= 0
            lo -= pad; hi += pad
            if nonNegative { lo = max(lo, 0) }  // differences are never negative: keep 0 as the floor
            func y(_ v: Double) -> Double { top + panelHeight * (1 - (v - lo) / (hi - lo)) }
            svg += "<rect x=\"\(margin.left)\" y=\"\(top)\" width=\"\(plotWidth)\" height=\"\(panelHeight)\" fill=\"none\" stroke=\"#888\"/>\n"
            svg += "<text x=\"\(margin.left)\" y=\"\(top - 8)\" font-weight=\"bold\">\(escape(title))</text>\n"
            for k in 0...4 {
                let v = lo + (hi - lo) * Double(k) / 4
                let yy = y(v)
                svg += "<line x1=\"\(margin.left)\" x2=\"\(margin.left + plotWidth)\" y1=\"\(f(yy))\" y2=\"\(f(yy))\" stroke=\"#eee\"/>"
                svg += "<text x=\"\(margin.left - 6)\" y=\"\(f(yy + 4))\" text-anchor=\"end\">\(String(format: "%.2f", v))</text>\n"
            }
            for (k, s) in series.enumerated() {
                let points = s.values.map { "\(f(x($0.0))),\(f(y($0.1)))" }.joined(separator: " ")
                svg += "<polyline fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"1.5\" points=\"\(points)\"/>\n"
                let lx = margin.left + plotWidth - 200, ly = top + 16 + Double(k) * 16
                svg += "<line x1=\"\(lx)\" x2=\"\(lx + 20)\" y1=\"\(ly - 4)\" y2=\"\(ly - 4)\" stroke=\"\(s.color)\" stroke-width=\"2\"/>"
                svg += "<text x=\"\(lx + 26)\" y=\"\(ly)\">\(escape(s.label))</text>\n"
            }
        }
        panel(top: margin.top + 10, title: "Mean luma per frame (8-bit)",
              series: [("mean luma", "#1f77b4", records.map { ($0.index, $0.meanLuma) })])
        let diffs = records.filter { !$0.temporalDifference.isEmpty }
        var lower: [(label: String, color: String, values: [(Int, Double)])] = [
            ("|ΔY| frame to frame", "#d62728", records.compactMap { r in r.lumaChange.map { (r.index, abs($0)) } }),
            ("temporal diff, s = 1", "#2ca02c", diffs.map { ($0.index, $0.temporalDifference[0]) }),
        ]
        if let coarse = FlickerAnalyzer.scales.firstIndex(of: 16), diffs.allSatisfy({ $0.temporalDifference.count > coarse }) {
            lower.append(("temporal diff, s = 16", "#9467bd", diffs.map { ($0.index, $0.temporalDifference[coarse]) }))
        }
        panel(top: margin.top + 10 + panelHeight + margin.gap, title: "Change between consecutive frames (8-bit)", series: lower)
        let axisY = margin.top + 10 + 2 * panelHeight + margin.gap
        for k in 0...5 {
            let i = first + Int((Double(n) * Double(k) / 5).rounded())
            svg += "<text x=\"\(f(x(i)))\" y=\"\(f(axisY + 18))\" text-anchor=\"middle\">\(i)</text>\n"
        }
        svg += "<text x=\"\(margin.left + plotWidth / 2)\" y=\"\(f(axisY + 38))\" text-anchor=\"middle\">frame</text>\n</svg>\n"
        return svg
    }

    private func f(_ v: Double) -> String { String(format: "%.1f", v) }
    private func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
