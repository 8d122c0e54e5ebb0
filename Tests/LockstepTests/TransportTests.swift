import Foundation
import Lockstep
import Tensor
import Testing

@Suite struct TransportTests {
    /// A field that says "every point comes from (0.3, −0.2) feature samples away" carries a
    /// smooth image by (2.4, −1.6) pixels at factor 8, to within Catmull–Rom's error.
    @Test func carriesByTheFieldsDisplacementInPixels() {
        let image = texture(channels: 3, width: 128, height: 96, seed: 21)
        let expected = texture(channels: 3, width: 128, height: 96, dx: -2.4, dy: 1.6, seed: 21)
        let field = CorrespondenceField(width: 16, height: 12,
                                        x: (0..<192).map { Float($0 % 16) + 0.3 },
                                        y: (0..<192).map { Float($0 / 16) - 0.2 },
                                        confidence: [Float](repeating: 0.75, count: 192))
        let (carried, confidence) = Transport.carry(image, along: field, factor: 8, origin: 3.5)
        var se = 0.0, n = 0.0, peak: Float = 0
        for c in 0..<3 { for y in 8..<88 { for x in 8..<120 {
            let d = Double(carried[c, y, x] - expected[c, y, x]); se += d * d; n += 1
            peak = max(peak, abs(expected[c, y, x]))
        } } }
        let quality = 10 * log10(Double(peak * peak) / (se / n))
        #expect(quality > 30, "PSNR \(quality) dB against the peak")
        #expect(confidence.values.allSatisfy { abs($0 - 0.75) < 1e-6 })
    }
}

@Suite struct ImageAlignmentTests {
    /// A field 0.4 px off on an exactly shifted image is brought to the true shift: the
    /// pixel-level step removes what the grid-level match leaves.
    @Test func refinesToTheTrueSubpixelShift() {
        let raw = texture(channels: 3, width: 128, height: 96, seed: 8)
        let reference = PlanarImage(channels: 3, height: 96, width: 128, values: raw.values.map { 0.5 + 0.08 * $0 })
        let shifted = texture(channels: 3, width: 128, height: 96, dx: -1.3, dy: 0.7, seed: 8)
        let frame = PlanarImage(channels: 3, height: 96, width: 128, values: shifted.values.map { 0.5 + 0.08 * $0 })
        // Grid of 8 px: the frame at pixel p shows the reference at p + (1.3, −0.7) px; start 0.4 px off.
        let (fw, fh) = (16, 12)
        var field = CorrespondenceField(width: fw, height: fh,
                                        x: (0..<(fw * fh)).map { Float($0 % fw) + (1.3 + 0.4) / 8 },
                                        y: (0..<(fw * fh)).map { Float($0 / fw) + (-0.7 - 0.4) / 8 },
                                        confidence: [Float](repeating: 1, count: fw * fh))
        ImageAlignment(reference: reference).refine(&field, frame: frame, factor: 8, origin: 3.5)
        var worst: Float = 0
        for j in 2..<(fh - 2) { for i in 2..<(fw - 2) {
            let index = j * fw + i
            worst = max(worst, abs(8 * (field.x[index] - Float(i)) - 1.3), abs(8 * (field.y[index] - Float(j)) + 0.7))
        } }
        #expect(worst < 0.06, "worst error \(worst) px")
    }
}
