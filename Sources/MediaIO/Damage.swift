import Foundation

/// Damage in an input, as FFmpeg reported it while decoding: demuxer or decoder errors (corrupt
/// or missing data, a read error before the end). A container's declared frame count that
/// differs from what decodes is not damage: edit lists, a dropped trailing B-frame or an AVI
/// header that over-counts all do that on files FFmpeg plays without a word.
public struct Damage: Equatable, Sendable, CustomStringConvertible {
    public var path: String
    /// The first errors, in the order FFmpeg reported them (a few at most).
    public var reasons: [String]
    /// How many errors were reported in all.
    public var errorCount: Int
    /// The index of the frame being decoded when the first error came.
    public var firstFrame: Int
    /// Frames decoded in all so far.
    public var framesDecoded: Int

    public init(path: String, reasons: [String], errorCount: Int, firstFrame: Int, framesDecoded: Int) {
        self.path = path
        self.reasons = reasons
        self.errorCount = errorCount
        self.firstFrame = firstFrame
        self.framesDecoded = framesDecoded
    }

    /// One line: the file, FFmpeg's first reason, where it started and how much there was.
    public var description: String {
        let more = errorCount > 1 ? ", \(errorCount) errors in all" : ""
        return "\(path): damaged video: \(reasons.first ?? "decode error") (from frame \(firstFrame)\(more); \(framesDecoded) frames decoded)"
    }
}

/// What to do when an input turns out to be damaged.
public enum DamagePolicy: Sendable {
    /// Decode everything that can be decoded and report the damage (`DamageLog.entries`).
    case report
    /// Stop at the first damage with `MediaError(.damaged)`: nothing is written.
    case refuse
}

/// The damage every reader of one job found, one entry per input file. Readers add to it as they
/// decode; the command reports it when the job has written its output.
public final class DamageLog: @unchecked Sendable {
    public let policy: DamagePolicy
    private let lock = NSLock()
    private var byPath: [String: Damage] = [:]
    private var order: [String] = []

    public init(policy: DamagePolicy = .report) { self.policy = policy }

    /// Records `damage`; a file read twice (two passes, a keyframe read first) keeps the reading
    /// that got furthest.
    public func record(_ damage: Damage) {
        lock.lock(); defer { lock.unlock() }
        if let known = byPath[damage.path] {
            if damage.framesDecoded >= known.framesDecoded { byPath[damage.path] = damage }
        } else {
            byPath[damage.path] = damage
            order.append(damage.path)
        }
    }

    /// Damaged inputs, in the order their damage was first found.
    public var entries: [Damage] {
        lock.lock(); defer { lock.unlock() }
        return order.compactMap { byPath[$0] }
    }
}
