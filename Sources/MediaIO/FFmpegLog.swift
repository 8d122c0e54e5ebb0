import CFFmpeg
import Foundation

/// FFmpeg's log, captured instead of printed: the tool prints its own one-line errors, and
/// keeps FFmpeg's last error message so a damaged input can be reported with FFmpeg's reason.
public enum FFmpegLog {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var lastError: String?
    nonisolated(unsafe) private static var verbose = false
    nonisolated(unsafe) private static var installed = false

    /// Installs the capturing callback once. With LOCKSTEP_FFMPEG_LOG=1 in the environment,
    /// FFmpeg's warnings and errors also go to stderr, for diagnosing an odd file.
    public static func install() {
        lock.lock(); defer { lock.unlock() }
        verbose = ProcessInfo.processInfo.environment["LOCKSTEP_FFMPEG_LOG"] == "1"
        guard !installed else { return }
        installed = true
        av_log_set_level(verbose ? AV_LOG_WARNING : AV_LOG_ERROR)
        av_log_set_callback { avcl, level, format, arguments in
            guard level <= av_log_get_level(), let format, let arguments else { return }
            var line = [CChar](repeating: 0, count: 1024)
            var printPrefix: Int32 = 1
            av_log_format_line2(avcl, level, format, arguments, &line, Int32(line.count), &printPrefix)
            let text = String(cString: line).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !text.isEmpty else { return }
            FFmpegLog.record(level: level, FFmpegLog.readable(text), context: lockstep_log_context_opaque(avcl))
        }
    }

    /// FFmpeg's line without the context's address: "[h264 @ 0x55d0…] Invalid NAL unit size."
    /// reads "h264: Invalid NAL unit size" (a context with no name, "[NULL @ …]", drops it).
    static func readable(_ line: String) -> String {
        var text = Substring(line)
        if text.hasPrefix("["), let close = text.firstIndex(of: "]"), let at = text.range(of: " @ 0x"), at.lowerBound < close {
            let name = text[text.index(after: text.startIndex)..<at.lowerBound]
            let rest = text[text.index(after: close)...].drop(while: { $0 == " " })
            text = name == "NULL" ? rest : Substring("\(name): \(rest)")
        }
        while text.hasSuffix(".") { text = text.dropLast() }
        return String(text)
    }

    /// Errors FFmpeg logs about one reader's input: damage in that input. FFmpeg logs them on the
    /// reader's thread (demuxer, parser) or on a decoder's worker threads, so the collector is
    /// found through the context that logged (its `opaque` holds `contextTag`) or else
    /// through the thread.
    public final class Collector: @unchecked Sendable {
        private let lock = NSLock()
        private var messages: [String] = []
        private var total = 0

        /// How many errors were logged, and the first few of them.
        public var count: Int { lock.lock(); defer { lock.unlock() }; return total }
        public var first: [String] { lock.lock(); defer { lock.unlock() }; return messages }

        fileprivate func add(_ text: String) {
            lock.lock()
            total += 1
            if messages.count < 8 { messages.append(text) }
            lock.unlock()
        }

        /// The value to store in a codec or format context's `opaque`, so that what FFmpeg logs
        /// through that context (and its worker copies) comes here. The collector must outlive it.
        var contextTag: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }
    }

    private static let collectorKey = "lockstep.ffmpeg-log-collector"

    /// Runs `body` with FFmpeg errors logged on this thread going to `collector`.
    static func collecting<R>(into collector: Collector, _ body: () throws -> R) rethrows -> R {
        let dictionary = Thread.current.threadDictionary
        let previous = dictionary[collectorKey]
        dictionary[collectorKey] = collector
        defer { dictionary[collectorKey] = previous }
        return try body()
    }

    private static func record(level: Int32, _ text: String, context: UnsafeMutableRawPointer?) {
        if level <= AV_LOG_ERROR {
            if let context {
                Unmanaged<Collector>.fromOpaque(context).takeUnretainedValue().add(text)
            } else if let collector = Thread.current.threadDictionary[collectorKey] as? Collector {
                collector.add(text)
            }
        }
        lock.lock()
        if level <= AV_LOG_ERROR { lastError = text }
        let echo = verbose
        lock.unlock()
        if echo { FileHandle.standardError.write(Data(("ffmpeg: " + text + "\n").utf8)) }
    }

    /// The last error FFmpeg logged since the previous call, and clears it.
    public static func takeLastError() -> String? {
        lock.lock(); defer { lock.unlock() }
        let text = lastError
        lastError = nil
        return text
    }
}
