import Foundation
import Tensor

/// A directory of still images read as a video: files with an image extension, in natural sort
/// order (frame2 before frame10), all of one size. Timestamps count frames at `frameRate`.
public final class FrameDirectoryReader: FrameSource {
    public let path: String
    public let files: [String]
    public private(set) var info: StreamInfo
    private var position = 0
    private var first: PlanarImage?

    public convenience init(path: String, frameRate: Rational = Rational(25, 1)) throws {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: path)
        } catch {
            throw MediaError(.missing, path: path, "cannot list the directory: \(error.localizedDescription)")
        }
        let files = names
            .filter { !$0.hasPrefix(".") && ImageFile.extensions.contains(($0 as NSString).pathExtension.lowercased()) }
            .sorted(by: naturalOrder)
            .map { (path as NSString).appendingPathComponent($0) }
        guard !files.isEmpty else {
            throw MediaError(.notMedia, path: path, "the directory has no frames (\(ImageFile.extensionList) files)")
        }
        try self.init(path: path, files: files, frameRate: frameRate)
    }

    /// The images `files` (at least one) as frames, in that order; `path` names them in messages.
    public init(path: String, files: [String], frameRate: Rational = Rational(25, 1)) throws {
        precondition(!files.isEmpty)
        self.path = path
        self.files = files
        let firstFile = files[0]
        let (image, bits, hasAlpha, _) = try ImageFile.decode(firstFile)
        first = image
        info = StreamInfo(width: image.width, height: image.height, timeBase: Rational(frameRate.denominator, frameRate.numerator),
                          frameRate: frameRate, declaredFrameCount: files.count, codecName: "images",
                          bitsPerComponent: bits, color: nil, sourceFile: nil)
        info.hasAlpha = hasAlpha
    }

    public func next() throws -> VideoFrame? {
        guard position < files.count else { return nil }
        let image: PlanarImage
        if let first {
            image = first
            self.first = nil
        } else {
            image = try ImageFile.read(files[position]).image
            guard image.width == info.width, image.height == info.height else {
                throw MediaError(.sizeMismatch, path: files[position],
                                 "is \(image.width)×\(image.height), but the frames before it are \(info.width)×\(info.height)")
            }
        }
        defer { position += 1 }
        return VideoFrame(image: image, pts: Int64(position), duration: 1, index: position)
    }
}

/// Writes frames as 00000.png, 00001.png, … (each frame's index in the input) into a directory
/// that appears, complete, under its final name only when `finish()` returns.
public final class FrameDirectoryWriter: FrameSink {
    public var path: String { target.finalPath }
    private let target: OutputTarget
    private let encoder: PNGEncoder
    private var closed = false

    public init(target: OutputTarget, info: StreamInfo) throws {
        self.target = target
        encoder = try PNGEncoder(width: info.width, height: info.height, bits: info.bitsPerComponent,
                                 sampleAspectRatio: info.sampleAspectRatio)
        target.begin()
        do {
            try FileManager.default.createDirectory(atPath: target.temporaryPath, withIntermediateDirectories: false)
        } catch {
            target.discard()
            throw MediaError(.unwritable, path: target.finalPath, "cannot create the output directory: \(error.localizedDescription)")
        }
    }

    deinit { if !closed { abort() } }

    public func write(_ frame: VideoFrame) throws {
        // Named by the frame's place in the input: a `--frames 40:41` export is 00040.png (a
        // keyframe's name, as `edit --keyframes` reads it), and the frame directories of a split
        // job's parts hold the whole run's names, to be put together with `mv`.
        let name = String(format: "%05d.png", frame.index)
        let file = (target.temporaryPath as NSString).appendingPathComponent(name)
        let data = try encoder.encode(frame.image)
        do {
            try data.write(to: URL(fileURLWithPath: file))
        } catch {
            if (error as NSError).code == NSFileWriteOutOfSpaceError {
                throw MediaError(.diskFull, path: target.finalPath, "disk full while writing \(name)")
            }
            throw MediaError(.io, path: target.finalPath, "cannot write \(name): \(error.localizedDescription)")
        }
    }

    public func finish() throws {
        guard !closed else { return }
        closed = true
        do { try target.commit() } catch { target.discard(); throw error }
    }

    public func abort() {
        guard !closed else { return }
        closed = true
        target.discard()
    }
}

/// "frame2.png" < "frame10.png": runs of digits compare by value, everything else by character.
public func naturalOrder(_ a: String, _ b: String) -> Bool {
    var i = a.unicodeScalars.makeIterator(), j = b.unicodeScalars.makeIterator()
    var ca = i.next(), cb = j.next()
    while let x = ca, let y = cb {
        if x.properties.numericType != nil && ("0"..."9").contains(x) && ("0"..."9").contains(y) {
            var na = "", nb = ""
            while let d = ca, ("0"..."9").contains(d) { na.unicodeScalars.append(d); ca = i.next() }
            while let d = cb, ("0"..."9").contains(d) { nb.unicodeScalars.append(d); cb = j.next() }
            let ta = na.drop(while: { $0 == "0" }), tb = nb.drop(while: { $0 == "0" })
            if ta.count != tb.count { return ta.count < tb.count }
            if ta != tb { return ta < tb }
            if na.count != nb.count { return na.count < nb.count }
            continue
        }
        if x != y { return x.value < y.value }
        ca = i.next(); cb = j.next()
    }
    return ca == nil && cb != nil
}

#if canImport(Glibc)
import Glibc
#endif
