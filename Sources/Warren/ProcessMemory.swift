import Glibc

/// `max_memory`: the resident memory of a worker's whole process group, so
/// a worker that leaves its work to children is measured with them.
enum ProcessMemory {
    /// How often a worker's whole group is measured; in between, after each
    /// answer, its leader alone (which costs one file, not one per process).
    static let groupScanMs: Int64 = 1000
    static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Bytes resident in process `pid` alone: one small file.
    static func processRSS(_ pid: pid_t) -> Int? {
        var buffer = [UInt8](repeating: 0, count: 1024)
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        close(fd)
        guard count > 0, let rss = residentPages(inStat: buffer[0..<count]) else { return nil }
        return rss * pageSize
    }

    /// Bytes resident in the processes of each of `groups`, from one scan
    /// of /proc; nil when /proc cannot be read. Reads one small file per
    /// process on the machine: done at most once a second for all workers
    /// together (`groupScanMs`).
    static func groupRSS(_ groups: Set<pid_t>) -> [pid_t: Int]? {
        guard let directory = opendir("/proc") else { return nil }
        defer { closedir(directory) }
        var totals: [pid_t: Int] = [:]
        for group in groups { totals[group] = 0 }
        var buffer = [UInt8](repeating: 0, count: 1024)
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            guard let pid = pid_t(name) else { continue }
            let group = getpgid(pid)
            guard groups.contains(group) else { continue }
            let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            close(fd)
            guard count > 0, let rss = residentPages(inStat: buffer[0..<count]) else { continue }
            totals[group, default: 0] += rss * pageSize
        }
        return totals
    }

    /// Field 24 of /proc/PID/stat (rss, in pages); the name in field 2 may hold blanks and parentheses.
    static func residentPages(inStat stat: ArraySlice<UInt8>) -> Int? {
        guard let close = stat.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        // After "comm)": field 3 (state) is the first.
        let fields = stat[(close + 1)...].split(separator: UInt8(ascii: " "))
        guard fields.count > 21 else { return nil }
        return Int(String(decoding: fields[21], as: UTF8.self))
    }
}
