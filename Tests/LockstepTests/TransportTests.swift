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
