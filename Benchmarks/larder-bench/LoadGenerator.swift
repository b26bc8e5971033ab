import Foundation
import Glibc
import LoadGeneratorSystem

/// The epoll token of the pacing timer (connections use their index).
private let timerToken = UInt64.max

/// HTTP/1.1 keep-alive load generator: one thread, nonblocking sockets, epoll, timerfd pacing.
struct LoadGenerator {
    /// Outcome of the recorded window. Latencies are in microseconds.
    struct Result {
        var requests: Int, seconds: Double
        var p50: Double, p99: Double, p999: Double, max: Double
        var errors: Int

        var rate: Double { Double(requests) / seconds }
    }

    /// `closedLoop`: each connection sends again as soon as its response completes (latency from actual send).
    /// `constant`/`poisson`: open loop with a fixed schedule of intended start times; latency is measured
    /// from the intended start, so time queued waiting for a free connection counts (no coordinated omission).
    enum Arrivals { case closedLoop, constant(perSecond: Double), poisson(perSecond: Double) }

    struct Failure: Error, CustomStringConvertible { let message: String; var description: String { message } }

    let host: String, port: Int, connections: Int, arrivals: Arrivals
    let seconds: Double, warmupSeconds: Double
    let requests: [[UInt8]]

    /// - Parameters:
    ///   - host: IPv4 literal such as "127.0.0.1".
    ///   - requests: pool of complete, encoded HTTP/1.1 requests, used round-robin.
    init(host: String, port: Int, connections: Int, arrivals: Arrivals, seconds: Double, warmupSeconds: Double = 1, requests: [[UInt8]]) {
        self.host = host; self.port = port; self.connections = connections; self.arrivals = arrivals
        self.seconds = seconds; self.warmupSeconds = warmupSeconds; self.requests = requests
    }

    /// Runs warm-up plus the recorded window and returns statistics for the recorded window.
    /// Throws `Failure` if a connection cannot be (re)established.
    func run() throws -> Result {
        guard !requests.isEmpty, connections > 0, seconds > 0 else { throw Failure(message: "need requests, connections > 0 and seconds > 0") }
        return try Engine(self).run()
    }
}

/// Per-connection state. The receive buffer is preallocated and only grows for unusually large responses.
private final class Connection {
    let index: Int
    var fd: Int32 = -1
    var buf: UnsafeMutablePointer<UInt8>
    var cap = 16 * 1024
    var used = 0            // bytes in buf
    var scanned = 0         // bytes already searched for "\r\n\r\n"
    var responseEnd = -1    // header + body length once the headers are parsed
    var status = 0
    var busy = false        // a request is outstanding
    var start: Int64 = 0    // ns: actual send (closed loop) or intended start (open loop)
    var req = 0             // pool index being sent
    var written = 0         // bytes of it already sent
    var wantOut = false     // EPOLLOUT registered (partial write pending)

    init(index: Int) { self.index = index; buf = .allocate(capacity: cap) }
    deinit { if fd >= 0 { close(fd) }; buf.deallocate() }
    func resetResponse() { used = 0; scanned = 0; responseEnd = -1; status = 0 }
}

/// Latency histogram: 1 µs buckets below 16.384 ms, then 128 log-linear sub-buckets per power of two
/// (≤0.8% relative error) up to 2^26 µs (> 60 s); larger values are clamped.
private struct Histogram {
    static let linear = 16_384, subBits = 7, firstExp = 14, lastExp = 25
    var counts = [Int](repeating: 0, count: linear + (lastExp - firstExp + 1) << subBits)
    var total = 0, maxNs: Int64 = 0

    mutating func record(_ ns: Int64) {
        total += 1
        if ns > maxNs { maxNs = ns }
        let us = Int(Swift.min(Swift.max(ns, 0), 60_000_000_000) / 1000)
        counts[Histogram.bucket(us)] += 1
    }
    static func bucket(_ us: Int) -> Int {
        if us < linear { return us }
        let e = 63 - us.leadingZeroBitCount
        return linear + ((e - firstExp) << subBits) + ((us >> (e - subBits)) & ((1 << subBits) - 1))
    }
    /// Midpoint of a bucket in µs.
    static func value(_ i: Int) -> Double {
        if i < linear { return Double(i) + 0.5 }
        let e = (i - linear) >> subBits + firstExp, sub = (i - linear) & ((1 << subBits) - 1)
        let width = 1 << (e - subBits)
        return Double((1 << e) + sub * width) + Double(width) / 2
    }
    func percentile(_ q: Double) -> Double {
        guard total > 0 else { return 0 }
        let target = Swift.max(1, Int((q * Double(total)).rounded(.up)))
        var seen = 0
        for (i, c) in counts.enumerated() where c > 0 {
            seen += c
            if seen >= target { return Swift.min(Histogram.value(i), Double(maxNs) / 1000) }
        }
        return Double(maxNs) / 1000
    }
}

/// SplitMix64: tiny seeded PRNG for reproducible Poisson arrivals.
private struct SplitMix64 {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }
}

/// FIFO of intended start times (ns) waiting for an idle connection; grows by doubling (rare).
private struct TimeQueue {
    var items = [Int64](repeating: 0, count: 4096), head = 0, count = 0
    mutating func push(_ t: Int64) {
        if count == items.count {
            items = (0..<count).map { items[(head + $0) % items.count] } + [Int64](repeating: 0, count: count)
            head = 0
        }
        items[(head + count) % items.count] = t; count += 1
    }
    mutating func pop() -> Int64 { let t = items[head]; head = (head + 1) % items.count; count -= 1; return t }
}

@inline(__always) private func monotonicNs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// The event loop; owns all file descriptors and closes them on deinit.
private final class Engine {
    let settings: LoadGenerator
    let openLoop: Bool
    var addr = sockaddr_in()
    var epfd: Int32 = -1, timerfd: Int32 = -1
    var connections: [Connection] = []
    var idle: [Int] = []          // indices of connections with nothing outstanding
    var queue = TimeQueue()
    var latencies = Histogram()
    var nextReq = 0, errors = 0
    var warmEnd: Int64 = 0, end: Int64 = 0
    let events: UnsafeMutablePointer<epoll_event>
    let maxEvents: Int

    init(_ settings: LoadGenerator) throws {
        self.settings = settings
        if case .closedLoop = settings.arrivals { openLoop = false } else { openLoop = true }
        maxEvents = settings.connections + 1
        events = .allocate(capacity: maxEvents)
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(truncatingIfNeeded: settings.port).bigEndian)
        guard inet_pton(AF_INET, settings.host, &addr.sin_addr) == 1 else { throw LoadGenerator.Failure(message: "bad IPv4 address \(settings.host)") }
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        timerfd = timerfd_create(CLOCK_MONOTONIC, Int32(TFD_NONBLOCK | TFD_CLOEXEC))
        guard epfd >= 0, timerfd >= 0 else { throw LoadGenerator.Failure(message: "epoll/timerfd setup failed: errno \(errno)") }
        epollCtl(EPOLL_CTL_ADD, timerfd, EPOLLIN.rawValue, timerToken)
        idle.reserveCapacity(settings.connections)
        for i in 0..<settings.connections {
            let c = Connection(index: i)
            connections.append(c)
            try connect(c)
            idle.append(i)
        }
    }

    deinit {
        connections.removeAll()
        if timerfd >= 0 { close(timerfd) }
        if epfd >= 0 { close(epfd) }
        events.deallocate()
    }

    func epollCtl(_ operation: Int32, _ fd: Int32, _ mask: UInt32, _ token: UInt64) {
        var event = epoll_event()
        event.events = mask
        event.data.u64 = token
        _ = epoll_ctl(epfd, operation, fd, &event)
    }

    /// Blocking connect, then switch to nonblocking + TCP_NODELAY and register for reads.
    func connect(_ c: Connection) throws {
        if c.fd >= 0 { close(c.fd); c.fd = -1 }   // close() also removes it from the epoll set
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw LoadGenerator.Failure(message: "socket() failed: errno \(errno)") }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 {
            let e = errno
            close(fd)
            throw LoadGenerator.Failure(message: "connect to \(settings.host):\(settings.port) failed: \(String(cString: strerror(e)))")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        c.fd = fd; c.wantOut = false; c.resetResponse()
        epollCtl(EPOLL_CTL_ADD, fd, EPOLLIN.rawValue, UInt64(c.index))
    }

    func run() throws -> LoadGenerator.Result {
        let t0 = monotonicNs()
        warmEnd = t0 + Int64(settings.warmupSeconds * 1e9)
        end = warmEnd + Int64(settings.seconds * 1e9)
        var rng = SplitMix64(state: 0x5EED_1234_ABCD_0001)
        var arrivalCount = 0.0, nextDue = Double(t0)
        var armed: Int64 = -1
        while true {
            let now = monotonicNs()
            if now >= end { break }
            switch settings.arrivals {   // enqueue every arrival whose intended time has passed
            case .closedLoop: break
            case .constant(let rate):
                while nextDue <= Double(now) { queue.push(Int64(nextDue)); arrivalCount += 1; nextDue = Double(t0) + arrivalCount * 1e9 / rate }
            case .poisson(let rate):
                while nextDue <= Double(now) { queue.push(Int64(nextDue)); nextDue += -log1p(-rng.unit()) * 1e9 / rate }
            }
            try dispatch()
            let wake = openLoop ? min(Int64(nextDue.rounded(.up)), end) : end
            if wake != armed { armTimer(wake); armed = wake }
            let n = epoll_wait(epfd, events, Int32(maxEvents), -1)
            if n < 0 {
                if errno == EINTR { continue }
                throw LoadGenerator.Failure(message: "epoll_wait failed: errno \(errno)")
            }
            for i in 0..<Int(n) {
                let mask = events[i].events
                let token = events[i].data.u64
                if token == timerToken {
                    var expirations: UInt64 = 0
                    _ = read(timerfd, &expirations, 8)
                    armed = -1   // expired: must be re-armed even if the target is unchanged
                    continue
                }
                let c = connections[Int(token)]
                if mask & EPOLLOUT.rawValue != 0 && c.wantOut { try flush(c) }
                if mask & (EPOLLIN.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 { try readable(c) }
            }
        }
        return LoadGenerator.Result(requests: latencies.total, seconds: Double(end - warmEnd) / 1e9,
                                    p50: latencies.percentile(0.5), p99: latencies.percentile(0.99), p999: latencies.percentile(0.999),
                                    max: Double(latencies.maxNs) / 1000, errors: errors)
    }

    func armTimer(_ at: Int64) {
        var its = itimerspec()
        its.it_value.tv_sec = Int(at / 1_000_000_000)
        its.it_value.tv_nsec = Int(at % 1_000_000_000)
        _ = timerfd_settime(timerfd, Int32(TFD_TIMER_ABSTIME), &its, nil)
    }

    /// Hands work to idle connections: queued arrivals (open loop) or a fresh request each (closed loop).
    func dispatch() throws {
        while let i = idle.last {
            let start: Int64
            if openLoop {
                guard queue.count > 0 else { return }
                start = queue.pop()
            } else {
                start = monotonicNs()
            }
            idle.removeLast()
            let c = connections[i]
            c.busy = true; c.start = start; c.written = 0
            c.req = nextReq % settings.requests.count; nextReq += 1
            try flush(c)   // a failed send reconnects and returns the connection to `idle`
        }
    }

    /// Writes as much of the current request as the socket accepts; uses EPOLLOUT for the remainder.
    func flush(_ c: Connection) throws {
        var failed = false
        settings.requests[c.req].withUnsafeBytes { p in
            while c.written < p.count {
                let n = send(c.fd, p.baseAddress! + c.written, p.count - c.written, Int32(MSG_NOSIGNAL))
                if n > 0 { c.written += n; continue }
                if n < 0 && errno == EINTR { continue }
                if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                    if !c.wantOut { c.wantOut = true; epollCtl(EPOLL_CTL_MOD, c.fd, EPOLLIN.rawValue | EPOLLOUT.rawValue, UInt64(c.index)) }
                    return
                }
                failed = true; return
            }
            if c.wantOut { c.wantOut = false; epollCtl(EPOLL_CTL_MOD, c.fd, EPOLLIN.rawValue, UInt64(c.index)) }
        }
        if failed { try fail(c) }
    }

    /// Connection broke (closed, reset, or unparseable response): count an error if a request was lost, reconnect.
    func fail(_ c: Connection) throws {
        let now = monotonicNs()
        if c.busy {
            if now >= warmEnd && now < end { errors += 1 }
            c.busy = false
            idle.append(c.index)
        }
        try connect(c)
    }

    func readable(_ c: Connection) throws {
        if c.used == c.cap {   // grow for large responses (rare; never on the steady-state path)
            let bigger = UnsafeMutablePointer<UInt8>.allocate(capacity: c.cap * 2)
            bigger.update(from: c.buf, count: c.used)
            c.buf.deallocate(); c.buf = bigger; c.cap *= 2
        }
        let n = recv(c.fd, c.buf + c.used, c.cap - c.used, 0)
        if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { return }
        if n <= 0 { try fail(c); return }
        c.used += n
        guard c.busy else { c.resetResponse(); return }   // unsolicited bytes: drop
        try parse(c)
    }

    func parse(_ c: Connection) throws {
        let p = c.buf
        if c.responseEnd < 0 {
            var i = max(c.scanned, 3), headerEnd = -1
            while i < c.used {
                if p[i] == 10 && p[i - 1] == 13 && p[i - 2] == 10 && p[i - 3] == 13 { headerEnd = i + 1; break }
                i += 1
            }
            guard headerEnd > 0 else { c.scanned = c.used; return }
            // Status line: "HTTP/1.x NNN ..."
            guard headerEnd >= 12, p[0] == 72, p[4] == 47, p[8] == 32,
                  (48...57).contains(p[9]), (48...57).contains(p[10]), (48...57).contains(p[11]) else { try fail(c); return }
            c.status = Int(p[9] - 48) * 100 + Int(p[10] - 48) * 10 + Int(p[11] - 48)
            guard let length = contentLength(p, headerEnd) else { try fail(c); return }
            c.responseEnd = headerEnd + length
        }
        if c.used >= c.responseEnd { complete(c) }
    }

    /// Finds "content-length:" (case-insensitive) at a line start within the header block.
    func contentLength(_ p: UnsafeMutablePointer<UInt8>, _ headerEnd: Int) -> Int? {
        let name: StaticString = "content-length:"
        let nameLen = name.utf8CodeUnitCount
        var line = 0
        while line < headerEnd {
            if p[line] == 10 {
                let s = line + 1
                if s + nameLen < headerEnd {
                    var j = 0   // OR 0x20 lowercases letters; '-' and ':' already have that bit set
                    while j < nameLen && (p[s + j] | 0x20) == name.utf8Start[j] { j += 1 }
                    if j == nameLen {
                        var k = s + nameLen, value = 0, digits = 0
                        while p[k] == 32 || p[k] == 9 { k += 1 }
                        while (48...57).contains(p[k]) { value = value * 10 + Int(p[k] - 48); k += 1; digits += 1 }
                        return digits > 0 ? value : nil
                    }
                }
            }
            line += 1
        }
        return nil
    }

    func complete(_ c: Connection) {
        let now = monotonicNs()
        if now >= warmEnd && now < end {
            latencies.record(now - c.start)
            if c.status < 200 || c.status > 299 { errors += 1 }
        }
        c.resetResponse()   // any bytes beyond this response are unsolicited (no pipelining) and dropped
        c.busy = false
        idle.append(c.index)
    }
}
