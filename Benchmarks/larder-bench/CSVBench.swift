import DataPlane
import Foundation
import Shared

/// Reading a `FileSource` CSV into typed column batches: the driver-stats
/// dataset of the materialization issue (drivers × hourly rows × 30 days).
extension LarderBench {
    static func csv(drivers: Int, runs: Int) throws {
        let hours = 30 * 24
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("larder-bench-csv-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("driver_hourly_stats.csv")
        try writeDriverStats(drivers: drivers, hours: hours, to: file)
        let rows = drivers * hours
        let bytes = (try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? NSNumber)?.intValue ?? 0
        print("\n## CSV file source → column batches: \(drivers) drivers × \(hours) hours = \(rows) rows, \(bytes / 1_048_576) MiB")
        let schema: [(name: String, type: ValueType)] = [
            ("driver_id", .int64), ("event_timestamp", .timestamp), ("created", .timestamp), ("conv_rate", .float64), ("acc_rate", .float64),
            ("avg_daily_trips", .int64),
        ]
        var samples = Samples()
        for _ in 0..<runs {
            var counted = 0
            samples.add(try measureThrowing {
                var reader = try CSVReader(path: file.path, schema: schema)
                while let batch = try reader.next() { counted += batch.count }
            })
            precondition(counted == rows)
        }
        var parallel = Samples()
        var parts = 0
        for _ in 0..<runs {
            var counted = 0
            parallel.add(try measureThrowing {
                var reader = try ParallelCSVReader(path: file.path, schema: schema)
                parts = reader.partCount
                while let batch = try reader.next() { counted += batch.count }
            })
            precondition(counted == rows)
        }
        var cutting = Samples()
        for _ in 0..<runs {
            cutting.add(try measureThrowing { _ = try ParallelCSVReader(path: file.path, schema: schema) })
        }
        print(Samples.header)
        print(samples.row("read + parse + type all rows"))
        print(parallel.row("the same in \(parts) parts on \(ProcessInfo.processInfo.activeProcessorCount) cores"))
        print(cutting.row("of which finding the cuts and starting the parts"))
        let median = samples.values.sorted()[samples.values.count / 2]
        print(String(format: "median: %.0f rows/s, %.0f MiB/s; peak resident memory of this process so far: %d MiB",
                     Double(rows) / median.seconds, Double(bytes) / 1_048_576 / median.seconds, peakResidentMiB()))
    }

    /// Writes the driver-stats dataset (hourly rows from 2025-01-01, random
    /// rates and trip counts) as CSV, in pieces, so generating the file needs
    /// no more memory than reading it.
    static func writeDriverStats(drivers: Int, hours: Int, to file: URL) throws {
        guard FileManager.default.createFile(atPath: file.path, contents: nil) else { throw CocoaError(.fileWriteUnknown) }
        let handle = try FileHandle(forWritingTo: file)
        try handle.write(contentsOf: Data("driver_id,event_timestamp,created,conv_rate,acc_rate,avg_daily_trips\n".utf8))
        var random = SystemRandomNumberGenerator()
        let start = 1_735_689_600
        for hour in 0..<hours {
            var chunk = ""
            let stamp = RFC3339.format(Date(timeIntervalSince1970: Double(start + hour * 3_600)))
            for driver in 0..<drivers {
                let conv = Double(Int.random(in: 0..<1_000_000, using: &random)) / 1_000_000
                let acc = Double(Int.random(in: 0..<1_000_000, using: &random)) / 1_000_000
                chunk += "\(1_000 + driver),\(stamp),\(stamp),\(conv),\(acc),\(Int.random(in: 0..<40, using: &random))\n"
            }
            try handle.write(contentsOf: Data(chunk.utf8))
        }
        try handle.close()
    }

    /// Resets the peak resident set, so the next reading covers what follows.
    static func resetPeakResident() {
        try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
    }

    /// The process's resident set now (VmRSS), in bytes.
    static func residentBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { return -1 }
        return kilobytes * 1_024
    }

    /// A process's peak resident set (VmHWM), in MiB: this one's by default.
    static func peakResidentMiB(process: String = "self") -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(process)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { return -1 }
        return kilobytes / 1_024
    }
}
