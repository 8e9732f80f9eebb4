import Glibc
import Synchronization

/// A TCP proxy of the tests' own, between warren and the broker, that can
/// pass traffic, black-hole it (sockets stay open, no byte moves: a silent
/// network), or cut every connection with a reset.
final class TestProxy: Sendable {
    enum Mode: Sendable { case pass, blackHole }

    private struct State {
        var mode: Mode = .pass
        var cutRequested = false
        var stopped = false
        /// Black-hole from the moment the client sends this method (class, method).
        var trigger: (UInt16, UInt16)?
    }

    /// Guards the mode and requests for the proxy thread.
    private let state = Mutex(State())
    let port: UInt16
    private let listener: Int32
    private let targetPort: UInt16

    init(targetPort: UInt16) throws {
        self.targetPort = targetPort
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = Self.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else { throw CancellationError() }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        listener = fd
        port = UInt16(bigEndian: actual.sin_port)
        let box = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        pthread_create(&thread, nil, { raw in
            Unmanaged<TestProxy>.fromOpaque(raw!).takeRetainedValue().loop()
            return nil
        }, box)
        pthread_detach(thread)
    }

    var mode: Mode {
        get { state.withLock { $0.mode } }
        set { state.withLock { $0.mode = newValue } }
    }

    /// Resets every open connection (RST), as a crashed middlebox would.
    func cutAll() { state.withLock { $0.cutRequested = true } }

    func stop() { state.withLock { $0.stopped = true } }

    /// Passes traffic until the client sends a method frame of this class
    /// and method (`queue.unbind` is 50, 50), then black-holes, that frame
    /// included: the broker never hears the request.
    func blackHoleWhenClientSends(classID: UInt16, methodID: UInt16) {
        state.withLock { $0.trigger = (classID, methodID) }
    }

    /// Whether `bytes` hold the start of a method frame of `method`: type 1,
    /// then channel and size, then class and method (a test's heuristic).
    private static func holdsMethod(_ bytes: ArraySlice<UInt8>, _ method: (UInt16, UInt16)) -> Bool {
        let wanted = [UInt8(method.0 >> 8), UInt8(method.0 & 0xff), UInt8(method.1 >> 8), UInt8(method.1 & 0xff)]
        var index = bytes.startIndex
        while index + 11 <= bytes.endIndex {
            if bytes[index] == 1, Array(bytes[(index + 7)..<(index + 11)]) == wanted { return true }
            index += 1
        }
        return false
    }

    private static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    private func loop() {
        var pairs: [(client: Int32, server: Int32)] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        func closePair(_ index: Int, reset: Bool) {
            for fd in [pairs[index].client, pairs[index].server] {
                if reset {
                    var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
                    setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
                }
                close(fd)
            }
            pairs.remove(at: index)
        }
        while true {
            let (mode, cut, stopped) = state.withLock { state -> (Mode, Bool, Bool) in
                defer { state.cutRequested = false }
                return (state.mode, state.cutRequested, state.stopped)
            }
            if stopped || cut {
                while !pairs.isEmpty { closePair(0, reset: true) }
                if stopped { close(listener); return }
            }
            var fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0)]
            if mode == .pass {
                for pair in pairs {
                    fds.append(pollfd(fd: pair.client, events: Int16(POLLIN), revents: 0))
                    fds.append(pollfd(fd: pair.server, events: Int16(POLLIN), revents: 0))
                }
            }
            guard poll(&fds, nfds_t(fds.count), 20) > 0 else { continue }
            if fds[0].revents != 0 {
                let client = accept(listener, nil, nil)
                let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                var address = Self.loopback(port: targetPort)
                let connected = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
                if client >= 0 && connected == 0 { pairs.append((client, server)) } else { close(client); close(server) }
            }
            guard mode == .pass else { continue }
            var broken: [Int] = []
            for (index, pair) in pairs.enumerated() {
                for (from, to, slot) in [(pair.client, pair.server, 1 + index * 2), (pair.server, pair.client, 2 + index * 2)]
                    where slot < fds.count && fds[slot].revents != 0 {
                    let count = read(from, &buffer, buffer.count)
                    if count <= 0 { broken.append(index); break }
                    if from == pair.client, let trigger = state.withLock({ $0.trigger }),
                       Self.holdsMethod(buffer[0..<count], trigger) {
                        state.withLock { $0.trigger = nil; $0.mode = .blackHole }
                        break
                    }
                    var offset = 0
                    while offset < count {
                        let written = buffer.withUnsafeBytes { write(to, $0.baseAddress! + offset, count - offset) }
                        if written <= 0 { break }
                        offset += written
                    }
                }
            }
            for index in Set(broken).sorted(by: >) { closePair(index, reset: false) }
        }
    }
}
