import CFFmpeg

/// A failed FFmpeg call: the operation and the AVERROR code, with FFmpeg's own text.
public struct FFmpegError: Error, CustomStringConvertible, Equatable {
    public let code: Int32
    public let operation: String

    public init(code: Int32, operation: String) {
        self.code = code
        self.operation = operation
    }

    public var message: String {
        var buffer = [CChar](repeating: 0, count: 256)
        lockstep_strerror(code, &buffer, buffer.count)
        return String(cString: buffer)
    }

    public var description: String { "\(operation): \(message)" }

    /// True for ENOSPC, so a full disk can be told apart from other write failures.
    public var isDiskFull: Bool { code == lockstep_averror(ENOSPC) }
}

/// What the user sees: one line naming the file and the problem.
public struct MediaError: Error, CustomStringConvertible, Equatable {
    public enum Kind: Equatable, Sendable {
        case missing, notMedia, unsupported, damaged, sizeMismatch, outputExists, sameAsInput
        case unwritable, diskFull, invalidArgument, interrupted, io
        /// An option's value that only the writer can judge (a codec, container, preset or CRF
        /// this FFmpeg or this encoder does not have): a usage error.
        case badOption
    }

    public let path: String
    public let kind: Kind
    public let problem: String

    public init(_ kind: Kind, path: String, _ problem: String) {
        self.kind = kind
        self.path = path
        self.problem = problem
    }

    public var description: String { "\(path): \(problem)" }
}

@inline(__always)
func check(_ code: Int32, _ operation: @autoclosure () -> String) throws {
    if code < 0 { throw FFmpegError(code: code, operation: operation()) }
}

extension FFmpegError {
    /// The error as the user sees it, for the file `path` being written.
    func forOutput(_ path: String) -> MediaError {
        if isDiskFull { return MediaError(.diskFull, path: path, "disk full while writing (\(operation))") }
        return MediaError(.io, path: path, "\(operation) failed: \(message)")
    }

    /// The error as the user sees it, for the file `path` being read.
    func forInput(_ path: String) -> MediaError {
        MediaError(.io, path: path, "\(operation) failed: \(message)")
    }
}

/// Runs the check for a call on the output `path`, reporting failure as the user sees it.
@inline(__always)
func checkOutput(_ code: Int32, _ operation: @autoclosure () -> String, path: String) throws {
    if code < 0 { throw FFmpegError(code: code, operation: operation()).forOutput(path) }
}
