import Foundation
import Lockstep
import MediaIO
import Tensor
import Testing
import TestSupport

/// samples/astronaut.png (256×256, a real photograph), read through the repository path.
func astronaut() throws -> PlanarImage {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return try ImageFile.read(root.appendingPathComponent("samples/astronaut.png").path).image
}

/// A natural-ish test image: a 1/f field of random sinusoids (every scale up to 0.45 cycles/pixel,
/// every direction) in luma and a smoother one in colour, plus a few hard-edged discs, clamped to
/// [0, 1] and rounded to 8 bits. Seeded, so the same on every run.
func texturedImage(width: Int, height: Int, seed: UInt64) -> PlanarImage {
    var random = SeededRandom(seed)
    struct Wave { var fx, fy, phase, amplitude: Double }
    func waves(_ count: Int, maxFrequency: Double, gain: Double) -> [Wave] {
        (0..<count).map { _ in
            let f = (1.0 / 64) * pow(maxFrequency * 64, random.uniform())
            let angle = random.uniform() * Double.pi
            return Wave(fx: f * cos(angle), fy: f * sin(angle), phase: random.uniform() * 2 * Double.pi, amplitude: gain * 0.04 / (f * 64).squareRoot())
        }
    }
    let luma = waves(90, maxFrequency: 0.45, gain: 1)
    let chroma = (0..<3).map { _ in waves(12, maxFrequency: 0.1, gain: 0.8) }
    let discs = (0..<5).map { _ in (x: random.uniform() * Double(width), y: random.uniform() * Double(height),
                                    r: 6 + random.uniform() * 20, v: random.uniform() - 0.5) }
    var values = [Float](repeating: 0, count: 3 * width * height)
    for y in 0..<height {
        for x in 0..<width {
            let (px, py) = (Double(x), Double(y))
            var l = 0.5
            for w in luma { l += w.amplitude * cos(2 * Double.pi * (w.fx * px + w.fy * py) + w.phase) }
            for d in discs where (px - d.x) * (px - d.x) + (py - d.y) * (py - d.y) < d.r * d.r { l += 0.4 * d.v }
            for c in 0..<3 {
                var v = l
                for w in chroma[c] { v += w.amplitude * cos(2 * Double.pi * (w.fx * px + w.fy * py) + w.phase) }
                values[(c * height + y) * width + x] = Float((min(max(v, 0), 1) * 255).rounded() / 255)
            }
        }
    }
    return PlanarImage(channels: 3, height: height, width: width, values: values)
}

struct LatentFixture: CustomTestStringConvertible, Sendable {
    var name: String
    var factor: Int
    var width: Int
    var height: Int
    var testDescription: String { "\(name) \(width)x\(height), k=\(factor)" }

    func image() throws -> PlanarImage {
        if name == "astronaut" {
            let photo = try astronaut()
            return photo.cropped(y: (256 - height) / 2, x: (256 - width) / 2, height: height, width: width)
        }
        return texturedImage(width: width, height: height, seed: 7)
    }

    /// Sizes that are multiples of k and sizes that are not (204×156 and 100×76 are not).
    static let all: [LatentFixture] = [
        .init(name: "astronaut", factor: 8, width: 256, height: 256),
        .init(name: "astronaut", factor: 8, width: 204, height: 156),
        .init(name: "astronaut", factor: 4, width: 100, height: 76),
        .init(name: "astronaut", factor: 16, width: 256, height: 256),
        .init(name: "texture", factor: 8, width: 200, height: 152),
        .init(name: "texture", factor: 4, width: 100, height: 76),
    ]
}

/// The property of issue 3, at its stated tolerances, through the one measurement module the CLI uses.
let shiftMeasurement: EquivarianceMeasurement = {
    var m = EquivarianceMeasurement()
    m.integerShifts = [1, 3]
    m.fractionalShifts = [0.125, 0.375, -0.625]
    return m
}()

@Suite struct LatentEquivarianceTests {
    /// E(T_Δ x) = T_{Δ/k} E(x) and D(T_{Δ/k} z) = T_Δ D(z): SPSNR ≥ 50 dB for integer shifts and
    /// ≥ 45 dB for fractional ones, along x and y; D(down₂(E(x))) = down₂(D(E(x))) to ≥ 40 dB.
    @Test(arguments: LatentFixture.all)
    func aliasFreeCodecIsShiftEquivariant(fixture: LatentFixture) throws {
        let image = try fixture.image()
        let report = shiftMeasurement.measure(AliasFreeCodec(factor: fixture.factor), image: image)
        #expect(report.latentInteger >= 50)
        #expect(report.latentFractional >= 45)
        #expect(report.imageInteger >= 50)
        #expect(report.imageFractional >= 45)
        #expect(report.scale >= 40)
        #expect(report.shifts.count == 10)
    }

    /// The same property fails for a box-average encoder with bilinear decoding: the test can fail.
    /// Its latent aliases, so it does not move with the image; Lockstep's does, by ≥ 15 dB more.
    @Test(arguments: LatentFixture.all)
    func naiveCodecFailsTheSameProperty(fixture: LatentFixture) throws {
        let image = try fixture.image()
        let naive = shiftMeasurement.measure(NaiveCodec(factor: fixture.factor), image: image)
        let ours = shiftMeasurement.measure(AliasFreeCodec(factor: fixture.factor), image: image)
        #expect(naive.latentFractional < 45)
        #expect(naive.latentInteger < 50)
        #expect(naive.scale < 40)
        #expect(ours.latentFractional - naive.latentFractional >= 15)
        #expect(ours.imageFractional - naive.imageFractional >= 15)
    }

    /// A shift by whole latent samples is a plain translation of the latent: away from the border,
    /// E(T_{(8, −16)} x) is E(x) moved by (1, −2) samples, to within float rounding.
    @Test func wholeLatentSampleShiftIsATranslation() throws {
        // Far enough from the borders (the encoder's support is ±12.5 latent samples) that the
        // mirrored border, which does not move with the image, does not reach.
        let image = texturedImage(width: 384, height: 384, seed: 5)
        let codec = AliasFreeCodec(factor: 8)
        let z = codec.encode(image)
        let moved = codec.encode(image.shifted(dx: 8, dy: -16))
        var worst: Float = 0
        for c in 0..<z.channels {
            for y in 16..<30 { for x in 16..<30 { worst = max(worst, abs(moved[c, y, x] - z[c, y + 2, x - 1])) } }
        }
        #expect(worst < 1e-5)
    }
}

@Suite struct LatentCodecTests {
    /// The colour path's two stages together reach 80 dB from the latent's stop edge, 0.25/k
    /// cycles/pixel, up to the image's Nyquist frequency; the decoder suppresses every image of
    /// that band by 80 dB from 0.75/k.
    @Test(arguments: [4, 8, 16])
    func filtersMeetTheirStopBands(factor: Int) {
        let encoder = LatentEncoder(factor: factor)
        var worst = -Double.infinity
        for f in stride(from: encoder.stopEdge, through: 0.5, by: 0.0002) {
            worst = max(worst, 20 * log10(encoder.colourResponse(at: f)))
        }
        #expect(worst <= -80)
        let decoder = LatentDecoder(factor: factor)
        #expect(decoder.interpolator.plan.response.peakGain(from: 0.75 / Double(factor), to: 0.5, step: 0.0002) <= -80)
        // The decoder is flat where the latent has content.
        #expect(abs(decoder.interpolator.plan.response.gain(at: 0.2 / Double(factor))) < 0.01)
    }

    /// The implementation is the filters the tests above check: a sinusoid through E then D comes
    /// out scaled by the product of their responses, and at the encoder's sample positions.
    @Test(arguments: [0.4, 1.2, 2.0])
    func roundTripGainIsTheDesignedResponse(cyclesPerBlock: Double) {
        let k = 8, n = 256
        let f = cyclesPerBlock / 64   // below 0.25/k = 2/64
        var image = PlanarImage(channels: 3, height: n, width: n)
        for c in 0..<3 { for y in 0..<n { for x in 0..<n { image[c, y, x] = Float(0.5 + 0.3 * cos(2 * Double.pi * f * Double(x) + 0.7)) } } }
        let codec = AliasFreeCodec(factor: k)
        let decoded = codec.decode(codec.encode(image), height: n, width: n)
        let gain = codec.encoder.colourResponse(at: f) * codec.decoder.interpolator.plan.response.magnitude(at: f)
        var worst = 0.0
        for x in 80..<176 {
            let expected = 0.5 + 0.3 * gain * cos(2 * Double.pi * f * Double(x) + 0.7)
            worst = max(worst, abs(Double(decoded[1, 100, x]) - expected))
        }
        #expect(worst < 2e-4)
    }

    /// The latent grid: sample j sits at pixel j·k + (k − 1)/2 through both stages, so a ramp in x
    /// encodes to exactly those positions (scaled) away from the borders.
    @Test(arguments: [4, 8, 16])
    func latentSamplesSitAtBlockCentres(factor: Int) {
        let n = 384
        var ramp = PlanarImage(channels: 3, height: 64, width: n)
        for c in 0..<3 { for y in 0..<64 { for x in 0..<n { ramp[c, y, x] = Float(x) / Float(n) } } }
        let z = LatentEncoder(factor: factor).encode(ramp)
        #expect(z.channels == 7 && z.width == n / factor && z.height == 64 / factor)
        let margin = 160 / factor
        for j in margin..<(z.width - margin) {
            let expected = (Float(j * factor) + Float(factor - 1) / 2) / Float(n)
            #expect(abs(z[0, z.height / 2, j] - expected) < 1e-5)
        }
    }

    /// D(E(x)) + residual is x, bit for bit: on a photograph, and on an image built to defeat a
    /// plain float residual (dark 8-bit values right next to bright ones).
    @Test func reconstructionWithResidualIsExact() throws {
        var stripes = PlanarImage(channels: 3, height: 64, width: 96)
        var random = SeededRandom(11)
        for c in 0..<3 {
            for y in 0..<64 {
                for x in 0..<96 {
                    stripes[c, y, x] = (x / 3) % 2 == 0 ? Float(random.next() % 4) / 255 : Float(250 + random.next() % 6) / 255
                }
            }
        }
        for (image, factor) in [(try astronaut(), 8), (stripes, 4), (texturedImage(width: 100, height: 76, seed: 3), 16)] {
            for codec in [AliasFreeCodec(factor: factor) as LatentCodec, NaiveCodec(factor: factor)] {
                let (_, decoded, residual) = codec.roundTrip(image)
                #expect(residual.reconstruct(decoded).isIdentical(to: image))
                // The detail later stages carry is the float difference itself.
                #expect(residual.detail.isIdentical(to: image - decoded))
            }
        }
    }

    /// A flat image has a flat latent: its colour, and no structure energy at all (the Gabor filters
    /// have zero mean, so brightness alone does not register as structure).
    @Test func flatImageHasNoStructure() {
        let flat = PlanarImage(channels: 3, height: 80, width: 120, values: [Float](repeating: 0.8, count: 3 * 80 * 120))
        let z = LatentEncoder(factor: 8).encode(flat)
        let n = z.planeSize
        let values = z.values
        #expect(values[0..<(3 * n)].allSatisfy { abs($0 - 0.8) < 1e-5 })
        #expect(values[(3 * n)...].allSatisfy { abs($0) < 1e-4 })
    }

    /// The structure channels tell regions apart by orientation: a grating varying along x lights
    /// channel 3 (0°), along y channel 5 (90°), and the two diagonals channels 4 and 6 (45°, 135°),
    /// each well above the others; a stronger grating gives a larger value, and a full-range one ≈ 1.
    @Test func structureChannelsAreOrientationSelective() {
        let k = 8, n = 128
        let f = 0.25 / Double(k / 2)   // the bank's tuned frequency, in cycles/pixel
        let r = 0.5.squareRoot()
        let directions: [(Double, Double)] = [(1, 0), (r, r), (0, 1), (r, -r)]
        for (channel, (ux, uy)) in directions.enumerated() {
            var own: [Float] = []
            for contrast in [0.05, 0.5] {
                var image = PlanarImage(channels: 3, height: n, width: n)
                for c in 0..<3 {
                    for y in 0..<n {
                        for x in 0..<n { image[c, y, x] = Float(0.5 + contrast * cos(2 * Double.pi * f * (ux * Double(x) + uy * Double(y)))) }
                    }
                }
                let z = LatentEncoder(factor: k).encode(image)
                let centre = (0..<4).map { z[3 + $0, 8, 8] }
                let others = centre.enumerated().filter { $0.offset != channel }.map(\.element)
                #expect(others.allSatisfy { $0 < 0.75 * centre[channel] }, "orientation \(channel), contrast \(contrast): \(centre)")
                own.append(centre[channel])
            }
            #expect(own[0] > 0.1 && own[1] > own[0] + 0.5 && abs(own[1] - 1) < 0.15, "orientation \(channel): \(own)")
        }
    }
}

