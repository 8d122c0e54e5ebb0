import Foundation
import MediaIO

/// A deflicker plan kept in a file (`lockstep deflicker --analysis FILE`), so that the parts of a
/// split job, or a second run, share one first pass. The file is a line naming the format and
/// its version, a little-endian UInt32 with the length of a JSON header (sizes, the grid, the
/// references, the cuts), then the Float32 records: every frame's, every reference's consensus
/// gain, and every frame's mean luma, and last a little-endian UInt32, the CRC-32 of everything
/// before it. Floats are stored as the machine holds them: little-endian on every machine
/// Lockstep builds for (x86-64, ARM64).
extension DeflickerPlan {
    static let fileMagic = Data("LOCKSTEP DEFLICKER ANALYSIS 6\n".utf8)

    struct FileHeader: Codable {
        struct Grid: Codable { var latentWidth, latentHeight, factor: Int; var origin: Float }
        struct SceneEntry: Codable { var start, reference: Int; var reason: String }
        var width, height, scale: Int
        var grid: Grid
        var frames, recordLength, gains, gainLength: Int
        var scenes: [SceneEntry]
        var shotStarts, cuts: [Int]
        /// With a guide, each scene's edit tone (`ToneRelation.values`, NaN written as null, then
        /// its weights).
        var editTones: [[Float?]]
        /// `--reference`'s frame; absent for references found as the video goes.
        var fixedReference: Int?

        /// Whether the header describes a plan this code could have written for frames of
        /// `width` × `height`: the grid that size makes, frame numbers within the video and in
        /// order, one consensus gain per reference. (A header edited by hand, or damaged, is
        /// refused here rather than trusted as an index later.)
        func isConsistent(width: Int, height: Int) -> Bool {
            func increasing(_ values: [Int]) -> Bool { zip(values, values.dropFirst()).allSatisfy { $0 < $1 } }
            let frameNumbers = 0..<max(frames, 0)
            guard frames > 0, (1...max(width, height, 1)).contains(scale), (1...64).contains(grid.factor), grid.origin.isFinite,
                  grid.latentWidth == (width / scale + grid.factor - 1) / grid.factor,
                  grid.latentHeight == (height / scale + grid.factor - 1) / grid.factor
            else { return false }
            let starts = scenes.map(\.start)
            return starts.first == 0 && increasing(starts) && starts.allSatisfy(frameNumbers.contains)
                && scenes.allSatisfy { frameNumbers.contains($0.reference) } && gains == scenes.count
                && shotStarts.first == 0 && increasing(shotStarts) && shotStarts.allSatisfy(frameNumbers.contains)
                && increasing(cuts) && cuts.allSatisfy { $0 > 0 && frameNumbers.contains($0) }
                && fixedReference.map(frameNumbers.contains) ?? true
        }
    }

    /// Writes the plan to `target` (under its temporary name, then renamed into place).
    public func write(to target: OutputTarget) throws {
        let header = FileHeader(
            width: width, height: height, scale: scale,
            grid: .init(latentWidth: grid.latentWidth, latentHeight: grid.latentHeight, factor: grid.factor, origin: grid.origin),
            frames: frameCount, recordLength: store.length, gains: gains.records.count, gainLength: gains.records.length,
            scenes: scenes.map { .init(start: $0.start, reference: $0.reference, reason: $0.reason.rawValue) },
            shotStarts: shotStarts, cuts: cuts, editTones: editTones.map { ($0.values + $0.weights).map { $0.isFinite ? $0 : nil } },
            fixedReference: fixedReference)
        // Keys in a fixed order: the same analysis makes the same file, byte for byte.
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let json = try encoder.encode(header)
        target.begin()
        do {
            guard FileManager.default.createFile(atPath: target.temporaryPath, contents: nil),
                  let file = FileHandle(forWritingAtPath: target.temporaryPath) else {
                throw MediaError(.unwritable, path: target.shownName, "cannot create it: \(String(cString: strerror(errno)))")
            }
            defer { try? file.close() }
            var length = UInt32(json.count).littleEndian
            try file.write(contentsOf: Self.fileMagic + Data(bytes: &length, count: 4) + json)
            try store.copyAll(to: file)
            try gains.records.copyAll(to: file)
            try file.write(contentsOf: lumas.withUnsafeBytes { Data($0) })
            try file.synchronize()
            // The checksum of what reached the file, read back from it.
            guard let written = FileHandle(forReadingAtPath: target.temporaryPath) else {
                throw MediaError(.io, path: target.shownName, "cannot read back the analysis: \(String(cString: strerror(errno)))")
            }
            defer { try? written.close() }
            var crc = try Checksum.crc32(of: written, length: Int(try file.offset())).littleEndian
            try file.write(contentsOf: Data(bytes: &crc, count: 4))
            try file.synchronize()
        } catch let error as MediaError {
            target.discard()
            throw error
        } catch {
            target.discard()
            let full = (error as NSError).code == Int(ENOSPC) || (error as NSError).code == NSFileWriteOutOfSpaceError
            throw MediaError(full ? .diskFull : .io, path: target.shownName, full ? "disk full while writing the analysis" : "cannot write the analysis: \(error.localizedDescription)")
        }
        try target.commit()
    }

    /// The plan in the analysis file at `path`, for frames of `width` × `height`.
    public static func read(from path: String, width: Int, height: Int) throws -> DeflickerPlan {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw MediaError(.invalidArgument, path: path, "is a directory, not a Lockstep deflicker analysis (lockstep deflicker --analysis writes one)")
        }
        guard let file = FileHandle(forReadingAtPath: path) else {
            throw MediaError(.missing, path: path, FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file or directory")
        }
        defer { try? file.close() }
        let notAnalysis = MediaError(.invalidArgument, path: path, "is not a Lockstep deflicker analysis (lockstep deflicker --analysis writes one)")
        func damaged(_ problem: String) -> MediaError { MediaError(.invalidArgument, path: path, "is cut short or damaged (\(problem))") }
        let start = (try file.read(upToCount: fileMagic.count + 4)) ?? Data()
        guard start.count == fileMagic.count + 4 else { throw notAnalysis }
        guard start.prefix(fileMagic.count) == fileMagic else {
            if start.starts(with: Data("LOCKSTEP DEFLICKER ANALYSIS ".utf8)) {
                throw MediaError(.unsupported, path: path, "is an analysis in another version of the format; make it again with this lockstep")
            }
            throw notAnalysis
        }
        let length = start.suffix(4).withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self))) }
        guard length < 1 << 28, let json = try file.read(upToCount: length), json.count == length,
              let header = try? JSONDecoder().decode(FileHeader.self, from: json) else { throw notAnalysis }
        guard header.width == width && header.height == height else {
            throw MediaError(.sizeMismatch, path: path, "is the analysis of a \(header.width)×\(header.height) video; the input is \(width)×\(height)")
        }
        let grid = AppearanceGrid(latentWidth: header.grid.latentWidth, latentHeight: header.grid.latentHeight,
                                  factor: header.grid.factor, origin: header.grid.origin)
        guard header.isConsistent(width: width, height: height),
              header.recordLength == recordLength(grid), header.gainLength == 3 * grid.count,
              header.editTones.isEmpty || (header.editTones.count == header.cuts.count + 1
                  && header.editTones.allSatisfy { $0.count == 6 * ToneRelation.levels })
        else { throw damaged("its header is not one Lockstep writes for a \(width)×\(height) video") }
        let float = MemoryLayout<Float>.size
        let recordsAt = fileMagic.count + 4 + length
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        // Counts are checked against the file's size before they are multiplied, so that a
        // damaged count cannot overflow.
        guard header.frames <= size / (header.recordLength * float), header.gains <= size / (header.gainLength * float) else {
            throw damaged("\(size) bytes, too few for the \(header.frames) frames its header names")
        }
        let gainsAt = recordsAt + header.frames * header.recordLength * float
        let lumasAt = gainsAt + header.gains * header.gainLength * float
        let checksumAt = lumasAt + header.frames * float
        guard size == checksumAt + 4 else {
            throw damaged("\(size) bytes where \(checksumAt + 4) were written")
        }
        // Every byte, header and records alike, against the checksum written last: a changed
        // value in a record passes every other check and would be applied as it reads.
        try file.seek(toOffset: UInt64(checksumAt))
        let stored = ((try file.read(upToCount: 4)) ?? Data()).withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }
        // A file that shrinks while it is read is damaged too, said as such (not as the read's error).
        guard let computed = try? Checksum.crc32(of: file, length: checksumAt) else { throw damaged("it could not be read whole") }
        guard computed == stored else {
            throw damaged("its checksum does not match: a byte was changed after it was written")
        }
        try file.seek(toOffset: UInt64(lumasAt))
        let lumas = ((try file.read(upToCount: header.frames * float)) ?? Data()).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let scenes = try header.scenes.map { entry -> DeflickerAnalysis.Scene in
            guard let reason = DeflickerAnalysis.Reason(rawValue: entry.reason) else { throw notAnalysis }
            return DeflickerAnalysis.Scene(start: entry.start, reference: entry.reference, reason: reason)
        }
        let store = try RecordStore(reading: path, offset: recordsAt, count: header.frames, recordLength: header.recordLength)
        let gains = ReferenceGains(grid: grid, store: try RecordStore(reading: path, offset: gainsAt, count: header.gains, recordLength: header.gainLength))
        return DeflickerPlan(width: width, height: height, store: store, grid: grid, scale: header.scale, gains: gains,
                             scenes: scenes, shotStarts: header.shotStarts, cuts: header.cuts, lumas: lumas,
                             editTones: header.editTones.map { tone in
                                 let n = 3 * ToneRelation.levels, values = tone.map { $0 ?? .nan }
                                 return ToneRelation(values: Array(values[..<n]), weights: Array(values[n...]))
                             }, fixedReference: header.fixedReference)
    }
}
