import ArgumentParser
import Dispatch
import Foundation
import Lockstep
import MediaIO
import Tensor

struct Equivariance: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check that the latent is shift-equivariant (alias-free), next to a naive encoder.",
        discussion: """
            Measures SPSNR (shift PSNR, as in AF-LDM) of the latent, E(T_d x) against T_{d/k} E(x), and of the \
            decoded image, D(T_{d/k} z) against T_d D(z), for shifts d of whole and 1/8 pixels along x and y (worst \
            case, border cropped); scale equivariance, D(down2(E(x))) against down2(D(E(x))); and reconstruction \
            PSNR of D(E(x)) alone and with the detail residual added back. The naive encoder is a k x k box average \
            with stride k, decoded bilinearly. In --json, reconstruction_psnr is D(E(x)) alone and \
            reconstruction_with_residual_psnr adds the residual back; an exact (infinite) PSNR is written as 999.
            """)

    @Argument(help: ArgumentHelp("An image, or a video or directory of frames (its first frame is measured). Default: samples/astronaut.png.",
                                 valueName: "IMAGE"))
    var input: String?

    @Option(help: ArgumentHelp("Latent factor k: the latent has one sample per k x k pixels (4, 8 or 16).", valueName: "K"))
    var factor: Int = 8

    @Flag(help: "Print the result as one JSON object on stdout.")
    var json = false

    @Flag(help: .hidden)
    var benchmark = false

    @Option(help: .hidden)
    var runs: Int = 21

    func validate() throws {
        guard [4, 8, 16].contains(factor) else { throw ValidationError("--factor must be 4, 8 or 16") }
        guard runs > 0 else { throw ValidationError("--runs must be positive") }
    }

    func run() throws {
        let path = try input ?? Self.bundledSample()
        let image = try Self.firstFrame(path)
        if benchmark { return timeCodec(image, path: path) }
        let measurement = EquivarianceMeasurement()
        let side = measurement.minimumSide(factor: factor)
        guard image.height >= side && image.width >= side else {
            throw MediaError(.invalidArgument, path: path,
                             "\(image.width)x\(image.height) is too small to measure with --factor \(factor) (needs at least \(side)x\(side))")
        }
        let ours = measurement.measure(AliasFreeCodec(factor: factor), image: image)
        let naive = measurement.measure(NaiveCodec(factor: factor), image: image)
        print(json ? Self.json(ours, naive) : Self.table(ours, naive, path: path, image: image), terminator: "")
    }

    /// samples/astronaut.png, looked for under the current directory and above the executable.
    static func bundledSample() throws -> String {
        let name = "samples/astronaut.png"
        var candidates = [FileManager.default.currentDirectoryPath]
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<6 {
            candidates.append(directory.path)
            directory.deleteLastPathComponent()
        }
        for base in candidates {
            let path = (base as NSString).appendingPathComponent(name)
            if FileManager.default.fileExists(atPath: path) { return path }
        }
        throw MediaError(.missing, path: name, "bundled sample not found (looked in the current directory and above the executable); give an IMAGE")
    }

    /// The image at `path`, or the first frame of the video or frame directory there.
    static func firstFrame(_ path: String) throws -> PlanarImage {
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        if exists && !isDirectory.boolValue && ImageFile.extensions.contains(URL(fileURLWithPath: path).pathExtension.lowercased()) {
            return try ImageFile.read(path).image
        }
        let source = try Media.openSource(path)
        guard let frame = try source.next() else { throw MediaError(.damaged, path: path, "has no frames") }
        return frame.image
    }

    static func json(_ ours: EquivarianceReport, _ naive: EquivarianceReport) -> String {
        func number(_ value: Double) -> String {
            if value.isNaN { return "null" }
            return String(format: "%.2f", min(value, 999))
        }
        func pair(_ key: String, _ value: (EquivarianceReport) -> Double) -> String {
            "\"\(key)\": {\"lockstep\": \(number(value(ours))), \"naive\": \(number(value(naive)))}"
        }
        let fields = [
            "\"factor\": \(ours.factor)",
            pair("latent_spsnr_integer") { $0.latentInteger },
            pair("latent_spsnr_fractional") { $0.latentFractional },
            pair("image_spsnr_integer") { $0.imageInteger },
            pair("image_spsnr_fractional") { $0.imageFractional },
            pair("scale_psnr") { $0.scale },
            pair("reconstruction_psnr") { $0.reconstruction },
            pair("reconstruction_with_residual_psnr") { $0.reconstructionWithResidual },
        ]
        return "{" + fields.joined(separator: ", ") + "}\n"
    }

    static func table(_ ours: EquivarianceReport, _ naive: EquivarianceReport, path: String, image: PlanarImage) -> String {
        func cell(_ value: Double) -> String {
            let text = value.isInfinite ? "exact" : value.isNaN ? "-" : String(format: "%.1f", value)
            return text.padding(toLength: 10, withPad: " ", startingAt: 0)
        }
        func row(_ label: String, _ a: Double, _ b: Double) -> String {
            label.padding(toLength: 46, withPad: " ", startingAt: 0) + cell(a) + cell(b) + "\n"
        }
        var out = "\(path): \(image.width)x\(image.height), latent factor k = \(ours.factor)\n"
        out += "PSNR in dB, peak 1; SPSNR is the worst case over x and y shifts, border cropped\n\n"
        out += "".padding(toLength: 46, withPad: " ", startingAt: 0) + "lockstep  naive\n"
        out += row("latent SPSNR, integer shifts", ours.latentInteger, naive.latentInteger)
        out += row("latent SPSNR, fractional shifts", ours.latentFractional, naive.latentFractional)
        out += row("image SPSNR, integer shifts", ours.imageInteger, naive.imageInteger)
        out += row("image SPSNR, fractional shifts", ours.imageFractional, naive.imageFractional)
        out += row("scale: D(down2(E(x))) vs down2(D(E(x)))", ours.scale, naive.scale)
        out += row("reconstruction: D(E(x))", ours.reconstruction, naive.reconstruction)
        out += row("reconstruction: D(E(x)) + residual", ours.reconstructionWithResidual, naive.reconstructionWithResidual)
        out += "\nper shift (latent / image SPSNR):\n"
        for (a, b) in zip(ours.shifts, naive.shifts) {
            let label = "  Δ\(a.axis.rawValue) = \(Self.fraction(a.shift))"
            out += label.padding(toLength: 22, withPad: " ", startingAt: 0)
                + String(format: "lockstep %6.1f / %6.1f    naive %6.1f / %6.1f\n", a.latent, a.image, b.latent, b.image)
        }
        return out
    }

    static func fraction(_ value: Double) -> String {
        if value == value.rounded() { return String(Int(value)) }
        let eighths = Int((value * 8).rounded())
        return "\(eighths)/8"
    }

    /// Hidden: encode and decode `image` `runs` times and print the median milliseconds of each.
    func timeCodec(_ image: PlanarImage, path: String) {
        let codec = AliasFreeCodec(factor: factor)
        var latent = codec.encode(image)
        _ = codec.decode(latent, height: image.height, width: image.width)
        var encode: [Double] = [], decode: [Double] = []
        for _ in 0..<runs {
            let t0 = DispatchTime.now().uptimeNanoseconds
            latent = codec.encode(image)
            let t1 = DispatchTime.now().uptimeNanoseconds
            let decoded = codec.decode(latent, height: image.height, width: image.width)
            let t2 = DispatchTime.now().uptimeNanoseconds
            precondition(decoded.height == image.height)
            encode.append(Double(t1 - t0) / 1e6)
            decode.append(Double(t2 - t1) / 1e6)
        }
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        print(String(format: "%dx%d k=%d: encode %.1f ms, decode %.1f ms (median of %d; %d cores)",
                     image.width, image.height, factor, median(encode), median(decode), runs, activeCoreCount))
    }
}
