import Foundation
import CFFmpeg

/// Opens inputs and outputs by path: a directory is a sequence of frames, anything else a video file.
public enum Media {
    /// A reader for `path`: a frame directory or a video file, limited to `frames` when given.
    /// A video's damage goes to `damageLog` (see `VideoReader`).
    public static func openSource(_ path: String, frameRate: Rational = Rational(25, 1), frames: FrameRange? = nil,
                                  damageLog: DamageLog? = nil) throws -> FrameSource {
        var isDirectory: ObjCBool = false
        guard StandardStream.isStandard(path) || FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw MediaError(.missing, path: path, "no such file or directory")
        }
        // A JPEG is one picture, read as the image it is (its EXIF orientation applied, as a
        // keyframe's is), not through a video demuxer that would leave it stored sideways.
        let isJPEG = ["jpg", "jpeg"].contains(URL(fileURLWithPath: path).pathExtension.lowercased())
        let source: FrameSource
        if isDirectory.boolValue {
            source = try FrameDirectoryReader(path: path, frameRate: frameRate)
        } else if isJPEG && !StandardStream.isStandard(path) {
            source = try FrameDirectoryReader(path: path, files: [path], frameRate: frameRate)
        } else {
            source = try VideoReader(path: path, damageLog: damageLog)
        }
        if let frames, frames != FrameRange() {
            // Only a directory's count is exact; a container's declared count is not (edit lists,
            // over-counting headers), so a video's range is checked by decoding.
            if source is FrameDirectoryReader, let total = source.info.declaredFrameCount, frames.start >= total {
                throw MediaError(.invalidArgument, path: StandardStream.shownName(path), "frames \(frames) are outside the video, which has \(total) frames")
            }
            return FrameRangeSource(source, range: frames)
        }
        return source
    }

    /// True when `path` names a frame directory as output: it ends in "/", is an existing
    /// directory, or has no extension and no container is named (`format`: a name without an
    /// extension with --format mp4 is an MP4 file; "-" is standard output, a stream).
    public static func isDirectoryOutput(_ path: String, format: String? = nil) -> Bool {
        if StandardStream.isStandard(path) { return false }
        if path.hasSuffix("/") { return true }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) { return isDirectory.boolValue }
        return format == nil && URL(fileURLWithPath: path).pathExtension.isEmpty
    }

    /// Refuses, before any work, an existing directory named as a file (a container's extension,
    /// or `--format`): the frames went into `clip.mp4/`, where a video was meant. (A file where a
    /// frame directory is asked for, `OutputTarget` refuses: the move into place failed at the
    /// end of the job.)
    static func checkKind(of path: String, clean: String, format: String?) throws {
        guard !StandardStream.isStandard(path) else { return }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: clean, isDirectory: &isDirectory) else { return }
        let namesFile = format != nil || (!URL(fileURLWithPath: clean).pathExtension.isEmpty && av_guess_format(nil, clean, nil) != nil)
        if isDirectory.boolValue && !path.hasSuffix("/") && namesFile {
            throw MediaError(.outputExists, path: clean, "is a directory, and the output asked for is a file (by its extension or --format): remove it, choose another name, or end the name with / for frames in it")
        }
    }

    /// A writer for `path` with the shape and timing of `info`, checked against `inputs`.
    public static func openSink(_ path: String, info: StreamInfo, inputs: [String], overwrite: Bool,
                                options: EncoderOptions = EncoderOptions()) throws -> FrameSink {
        let clean = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        try checkKind(of: path, clean: clean, format: options.format)
        let directory = isDirectoryOutput(path, format: options.format)
        let target = try OutputTarget(path: clean, inputs: inputs, overwrite: overwrite, directory: directory)
        if directory {
            return try FrameDirectoryWriter(target: target, info: info)
        }
        return try VideoWriter(target: target, info: info, options: options)
    }

    /// The frames at `indices` (decode order, from 0) of the video or frame directory at `path`,
    /// read in one pass that stops after the last of them. An index past the end is an error that
    /// names the video's length.
    public static func readFrames(_ path: String, indices: Set<Int>, damageLog: DamageLog? = nil) throws -> [Int: VideoFrame] {
        guard let last = indices.max() else { return [:] }
        let source = try openSource(path, damageLog: damageLog)
        if source is FrameDirectoryReader, let total = source.info.declaredFrameCount, last >= total, let bad = indices.sorted().first(where: { $0 >= total }) {
            throw MediaError(.invalidArgument, path: StandardStream.shownName(path), "frame \(bad) is outside the video, which has \(total) frames (0 to \(total - 1))")
        }
        var found: [Int: VideoFrame] = [:]
        var count = 0
        while let frame = try source.next() {
            count = frame.index + 1
            if indices.contains(frame.index) { found[frame.index] = frame }
            if frame.index >= last { break }
        }
        if let bad = indices.sorted().first(where: { found[$0] == nil }) {
            throw MediaError(.invalidArgument, path: StandardStream.shownName(path), "frame \(bad) is outside the video, which has \(count) frames (0 to \(count - 1))")
        }
        return found
    }
}
