import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// A command for `RedisClient`, with the slot of the keys it touches (nil:
/// any node, such as `PING`; every key of one command must share the slot).
public struct RedisCommand: Sendable {
    public var arguments: [RESPArgument]
    public var slot: Int?

    /// Creates a command touching keys of `slot`.
    public init(_ arguments: [RESPArgument], slot: Int?) {
        self.arguments = arguments
        self.slot = slot
    }
}

/// A client of one Redis or Valkey deployment, standalone or Cluster, found
/// out by asking the configured addresses (`CLUSTER SLOTS`).
///
/// - Connections: a few per node (`connections_per_node`), each carrying many
///   calls at once (RESP pipelining); opened when first needed, replaced when
///   they close or a call on them times out.
/// - Cluster: a key's slot (`RedisSlot`) picks the node from the slot map.
///   A `MOVED` answer updates the map and the command goes to the new owner; an
///   `ASK` answer sends it there once, after `ASKING`; the whole map is read
///   again after a redirection or a failed node.
/// - Retries: commands are sent again, up to `maximumRounds` in all, after a
///   redirection, `TRYAGAIN`, or a connection that failed. Only commands that
///   may run twice (reads, and the online store's newest-wins writes) belong here.
public final class RedisClient: Sendable {
    let settings: RedisSettings
    let logger: Logger
    let group: any EventLoopGroup
    private let tls: TLSConfiguration?
    private let state: Mutex<Topology>
    /// Commands sent again because the Cluster answered `MOVED` or `ASK`.
    let redirections = Atomic<Int>(0)
    /// Pipelines sent on a connection of the caller's event loop (see `pipeline(_:on:)`).
    let onLoopPipelines = Atomic<Int>(0)

    /// The most times a command is sent before its error is the answer.
    static let maximumRounds = 5

    struct Topology {
        enum Mode {
            case unknown
            case standalone(RedisEndpoint)
            /// Per slot, the index of its owner in `owners`.
            case cluster(slots: [Int16], owners: [RedisEndpoint])
        }

        var mode = Mode.unknown
        var nodes: [RedisEndpoint: RedisNodeConnections] = [:]
        var refresh: Task<Void, Never>?
        var closed = false
    }

    /// A client of the deployment `settings` name (nothing connects until the first call).
    public init(settings: RedisSettings, logger: Logger, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) throws {
        self.settings = settings
        self.logger = logger
        self.group = group
        if let ca = settings.tlsCAFile {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(ca)
            self.tls = tls
        } else {
            tls = nil
        }
        state = Mutex(Topology())
    }

    /// The topology as known now, without asking (`unknown` before the first call, and once closed).
    var knownTopology: Topology.Mode {
        state.withLock { $0.closed ? .unknown : $0.mode }
    }

    /// Whether the deployment is a Cluster (asking it first if not known yet).
    public func isCluster() async throws -> Bool {
        if case .cluster = try await topology() { return true }
        return false
    }

    /// Sends one command; its answer, or `RedisError.server` when it is an error.
    @discardableResult
    public func send(_ arguments: [RESPArgument], slot: Int? = nil) async throws -> RESPValue {
        let answer = try await pipeline([RedisCommand(arguments, slot: slot)])[0]
        if case .error(let message) = answer { throw RedisError.server(message) }
        return answer
    }

    /// Sends `arguments` to every node that owns slots (every master of a
    /// Cluster, or the one server), returning each node's answer.
    public func sendToEveryNode(_ arguments: [RESPArgument]) async throws -> [RESPValue] {
        let endpoints: [RedisEndpoint]
        switch try await topology() {
        case .standalone(let endpoint): endpoints = [endpoint]
        case .cluster(_, let owners): endpoints = Array(Set(owners)).sorted { $0.description < $1.description }
        case .unknown: endpoints = []
        }
        var answers: [RESPValue] = []
        for endpoint in endpoints {
            let answer = try await node(endpoint).connection().pipeline([arguments])[0]
            if case .error(let message) = answer { throw RedisError.server(message) }
            answers.append(answer)
        }
        return answers
    }

    /// Sends `commands`, each to the node owning its slot (those of one node in
    /// one write), and returns their answers in order. A command's own error
    /// (such as `WRONGTYPE`) is its answer; a deployment that cannot be reached
    /// throws.
    public func pipeline(_ commands: [RedisCommand]) async throws -> [RESPValue] {
        guard !commands.isEmpty else { return [] }
        var answers = [RESPValue?](repeating: nil, count: commands.count)
        // Commands still to send, with where a redirection sent them (and whether it was ASK).
        var pending = Array(commands.indices)
        var redirected: [Int: (endpoint: RedisEndpoint, asking: Bool)] = [:]
        var lastFailure: (any Error)?
        for round in 0..<Self.maximumRounds {
            if round > 0 { try await Task.sleep(for: .milliseconds(round * 20)) }
            let topology = try await topology()
            var batches: [RedisEndpoint: [Int]] = [:]
            for index in pending {
                let endpoint = redirected[index]?.endpoint ?? Self.owner(of: commands[index].slot, in: topology)
                guard let endpoint else { throw RedisError.unreachable("no node serves slot \(commands[index].slot ?? -1)") }
                batches[endpoint, default: []].append(index)
            }
            let asking = Set(redirected.filter(\.value.asking).keys)
            @Sendable func send(_ indices: [Int], to endpoint: RedisEndpoint) async -> Result<[RESPValue], any Error> {
                let sent = indices.flatMap { index -> [[RESPArgument]] in
                    asking.contains(index) ? [["ASKING"], commands[index].arguments] : [commands[index].arguments]
                }
                do { return .success(try await node(endpoint).connection().pipeline(sent)) } catch { return .failure(error) }
            }
            var results: [RedisEndpoint: Result<[RESPValue], any Error>] = [:]
            if batches.count == 1, let (endpoint, indices) = batches.first {
                results[endpoint] = await send(indices, to: endpoint)   // one node (a server, most reads): no child task
            } else {
                results = await withTaskGroup(of: (RedisEndpoint, Result<[RESPValue], any Error>).self) { group in
                    for (endpoint, indices) in batches {
                        group.addTask { (endpoint, await send(indices, to: endpoint)) }
                    }
                    var results: [RedisEndpoint: Result<[RESPValue], any Error>] = [:]
                    for await (endpoint, result) in group { results[endpoint] = result }
                    return results
                }
            }
            pending = []
            var stale = false
            for (endpoint, indices) in batches {
                switch results[endpoint]! {
                case .failure(let error):
                    lastFailure = error
                    stale = true
                    pending += indices
                    for index in indices { redirected[index] = nil }
                case .success(let values):
                    var position = 0
                    for index in indices {
                        if redirected[index]?.asking == true { position += 1 }   // ASKING's +OK
                        let value = values[position]
                        position += 1
                        redirected[index] = nil
                        guard case .error(let message) = value, round < Self.maximumRounds - 1 else {
                            answers[index] = value
                            continue
                        }
                        if let (slot, target) = Self.redirection(message, prefix: "MOVED ") {
                            redirections.add(1, ordering: .relaxed)
                            learn(slot: slot, owner: target)
                            redirected[index] = (target, false)
                            stale = true
                            pending.append(index)
                        } else if let (_, target) = Self.redirection(message, prefix: "ASK ") {
                            redirections.add(1, ordering: .relaxed)
                            redirected[index] = (target, true)
                            pending.append(index)
                        } else if Self.busy(message) {
                            pending.append(index)
                        } else {
                            answers[index] = value
                        }
                    }
                }
            }
            if stale { refreshTopology() }
            if pending.isEmpty { return answers.map { $0! } }
        }
        throw lastFailure ?? RedisError.unreachable("no answer after \(Self.maximumRounds) attempts")
    }

    /// Sends `commands` on a connection running on `eventLoop`, so the answers
    /// come back on it with no thread in between — when the topology is known,
    /// every command goes to one node, and a connection to it is open on that
    /// loop. Nil otherwise (the caller uses `pipeline`). A redirection or a failed
    /// connection is finished by `pipeline`, which follows and retries it.
    func pipeline(_ commands: [RedisCommand], on eventLoop: any EventLoop) -> EventLoopFuture<[RESPValue]>? {
        guard !commands.isEmpty else { return nil }
        let topology = knownTopology
        if case .unknown = topology { return nil }
        guard let endpoint = Self.owner(of: commands[0].slot, in: topology),
              commands.allSatisfy({ $0.slot == commands[0].slot || Self.owner(of: $0.slot, in: topology) == endpoint }),
              let connection = node(endpoint).connection(on: eventLoop)
        else { return nil }
        onLoopPipelines.add(1, ordering: .relaxed)
        return connection.pipelineFuture(commands.map(\.arguments)).flatMapWithEventLoop { answers, loop in
            let redirected = answers.contains { answer in
                if case .error(let message) = answer { return Self.sendsAgain(message) }
                return false
            }
            guard redirected else { return loop.makeSucceededFuture(answers) }
            return loop.makeFutureWithTask { try await self.pipeline(commands) }
        }.flatMapErrorWithEventLoop { _, loop in
            loop.makeFutureWithTask { try await self.pipeline(commands) }
        }
    }

    /// Closes every connection.
    public func close() async {
        let nodes = state.withLock { state in
            state.closed = true
            state.refresh?.cancel()
            return Array(state.nodes.values)
        }
        for node in nodes { await node.close() }
    }

    // MARK: Topology

    /// The node serving `slot` (any node for a command without keys).
    static func owner(of slot: Int?, in topology: Topology.Mode) -> RedisEndpoint? {
        switch topology {
        case .unknown: return nil
        case .standalone(let endpoint): return endpoint
        case .cluster(let slots, let owners):
            guard let slot else { return owners.first }
            let owner = Int(slots[slot])
            return owner >= 0 ? owners[owner] : nil
        }
    }

    /// Whether an error answer is one `pipeline` follows or sends again: a redirection, or a node busy for a moment.
    static func sendsAgain(_ message: String) -> Bool {
        message.hasPrefix("MOVED ") || message.hasPrefix("ASK ") || busy(message)
    }

    /// A node busy for a moment (a slot migrating, the Cluster settling, a dataset loading): sent again as it was.
    static func busy(_ message: String) -> Bool {
        message.hasPrefix("TRYAGAIN") || message.hasPrefix("CLUSTERDOWN") || message.hasPrefix("LOADING")
    }

    /// `MOVED 3999 127.0.0.1:6381` (or ASK): the slot and where it is now.
    static func redirection(_ message: String, prefix: String) -> (Int, RedisEndpoint)? {
        guard message.hasPrefix(prefix) else { return nil }
        let parts = message.dropFirst(prefix.count).split(separator: " ")
        guard parts.count == 2, let slot = Int(parts[0]), (0..<RedisSlot.count).contains(slot),
              let endpoint = RedisEndpoint(parsing: String(parts[1]))
        else { return nil }
        return (slot, endpoint)
    }

    /// The known topology, found out first if it is not known yet.
    func topology() async throws -> Topology.Mode {
        let (mode, closed) = state.withLock { ($0.mode, $0.closed) }
        guard !closed else { throw RedisError.closed }
        if case .unknown = mode {
            let found = try await discover()
            state.withLock { $0.mode = found }
            return found
        }
        return mode
    }

    /// Asks the configured addresses, in turn, what the deployment is.
    func discover() async throws -> Topology.Mode {
        var failures: [String] = []
        for seed in settings.endpoints {
            do {
                let answer = try await node(seed).connection().pipeline([["CLUSTER", "SLOTS"]])[0]
                switch answer {
                case .error(let message) where message.contains("cluster support disabled"):
                    return .standalone(seed)
                case .error(let message):
                    failures.append("\(seed): \(message)")
                case .array(let ranges?):
                    var slots = [Int16](repeating: -1, count: RedisSlot.count)
                    var owners: [RedisEndpoint] = []
                    for case .array(let range?) in ranges {
                        guard range.count >= 3, case .integer(let first) = range[0], case .integer(let last) = range[1],
                              case .array(let master?) = range[2], master.count >= 2, case .integer(let port) = master[1],
                              first >= 0, last < RedisSlot.count, first <= last
                        else { continue }
                        let host = master[0].string.flatMap { $0.isEmpty || $0 == "?" ? nil : $0 } ?? seed.host
                        let owner = RedisEndpoint(host: host, port: Int(port))
                        let position = owners.firstIndex(of: owner) ?? { owners.append(owner); return owners.count - 1 }()
                        for slot in Int(first)...Int(last) { slots[slot] = Int16(position) }
                    }
                    guard !owners.isEmpty else {
                        failures.append("\(seed): the cluster has no slots assigned")
                        continue
                    }
                    return .cluster(slots: slots, owners: owners)
                default:
                    failures.append("\(seed): an unexpected answer to CLUSTER SLOTS")
                }
            } catch {
                failures.append("\(seed): \(error)")
            }
        }
        throw RedisError.unreachable(failures.joined(separator: "; "))
    }

    /// Records that `slot` is served by `owner` now (from a MOVED answer).
    func learn(slot: Int, owner: RedisEndpoint) {
        state.withLock { state in
            guard case .cluster(var slots, var owners) = state.mode else { return }
            let position = owners.firstIndex(of: owner) ?? { owners.append(owner); return owners.count - 1 }()
            slots[slot] = Int16(position)
            state.mode = .cluster(slots: slots, owners: owners)
        }
    }

    /// Reads the slot map again in the background (one read at a time).
    func refreshTopology() {
        state.withLock { state in
            guard state.refresh == nil, !state.closed else { return }
            state.refresh = Task {
                defer { self.state.withLock { $0.refresh = nil } }
                do {
                    let found = try await self.discover()
                    self.state.withLock { $0.mode = found }
                } catch {
                    self.logger.warning("cannot read the Redis topology", metadata: ["larder.error": .string(String(describing: error))])
                }
            }
        }
    }

    /// The connections to `endpoint`.
    func node(_ endpoint: RedisEndpoint) -> RedisNodeConnections {
        state.withLock { state in
            if let node = state.nodes[endpoint] { return node }
            let node = RedisNodeConnections(endpoint: endpoint, settings: settings, tls: tls, group: group)
            state.nodes[endpoint] = node
            return node
        }
    }
}

/// The connections to one node: `connections_per_node` of them, used in turn,
/// each opened when first needed and opened again once it closed. After a
/// failed connect, calls fail at once for a moment rather than each waiting
/// for its own connect to time out.
final class RedisNodeConnections: Sendable {
    let endpoint: RedisEndpoint
    let settings: RedisSettings
    let tls: TLSConfiguration?
    let group: any EventLoopGroup
    private let slots: Mutex<Slots>
    private let turn = Atomic<Int>(0)
    /// Connections whose channels run on a given event loop (see `connection(on:)`), and those being opened.
    private let loopBound = Mutex(LoopBound())

    struct LoopBound {
        var open: [ObjectIdentifier: RedisConnection] = [:]
        var opening: Set<ObjectIdentifier> = []
        var failedAt: ContinuousClock.Instant?
        var closed = false
    }

    struct Slots {
        var connections: [Task<RedisConnection, any Error>?]
        var failedAt: ContinuousClock.Instant?
        var failure = ""
    }

    /// How long calls fail at once after a failed connect.
    static let quietAfterFailure = Duration.milliseconds(200)

    init(endpoint: RedisEndpoint, settings: RedisSettings, tls: TLSConfiguration?, group: any EventLoopGroup) {
        self.endpoint = endpoint
        self.settings = settings
        self.tls = tls
        self.group = group
        slots = Mutex(Slots(connections: Array(repeating: nil, count: max(settings.connectionsPerNode, 1))))
    }

    /// An open connection.
    func connection() async throws -> RedisConnection {
        let index = turn.wrappingAdd(1, ordering: .relaxed).oldValue % max(settings.connectionsPerNode, 1)
        for _ in 0..<2 {
            let task = try slots.withLock { slots throws(RedisError) -> Task<RedisConnection, any Error> in
                if let task = slots.connections[index] { return task }
                if let failed = slots.failedAt, ContinuousClock.now - failed < Self.quietAfterFailure {
                    throw .unreachable("\(endpoint): \(slots.failure)")
                }
                let group = self.group
                let task = Task { try await self.connect(on: group) }
                slots.connections[index] = task
                return task
            }
            do {
                let connection = try await task.value
                if connection.isActive { return connection }
                slots.withLock { if $0.connections[index] == task { $0.connections[index] = nil } }
            } catch {
                slots.withLock { slots in
                    if slots.connections[index] == task { slots.connections[index] = nil }
                    slots.failedAt = .now
                    slots.failure = String(describing: error)
                }
                if case RedisError.server(let message) = error { throw RedisError.server(message) }   // such as WRONGPASS: no retry helps
                throw RedisError.unreachable("\(endpoint): \(error)")
            }
        }
        throw RedisError.unreachable("\(endpoint): the connection keeps closing")
    }

    /// A new connection to the node on `group` (an event loop binds it to that loop), authenticated.
    func connect(on group: any EventLoopGroup) async throws -> RedisConnection {
        let timeout = TimeAmount.nanoseconds(Int64(settings.timeout.components.seconds) * 1_000_000_000
            + settings.timeout.components.attoseconds / 1_000_000_000)
        return try await RedisConnection.connect(
            host: endpoint.host, port: endpoint.port, user: settings.user, password: settings.password, tls: tls, timeout: timeout, group: group)
    }

    /// An open connection whose channel runs on `eventLoop`, if there is one;
    /// otherwise nil, and one is opened there for later calls. A caller on that
    /// loop sends and gets its answers without leaving it.
    func connection(on eventLoop: any EventLoop) -> RedisConnection? {
        let id = ObjectIdentifier(eventLoop)
        let (held, open) = loopBound.withLock { state -> (RedisConnection?, Bool) in
            if let connection = state.open[id], connection.isActive { return (connection, false) }
            state.open[id] = nil
            // As for the pooled connections: after a failed connect, not again for a moment (not once per read).
            let quiet = state.failedAt.map { ContinuousClock.now - $0 < Self.quietAfterFailure } ?? false
            guard !state.closed, !quiet, !state.opening.contains(id) else { return (nil, false) }
            state.opening.insert(id)
            return (nil, true)
        }
        if open {
            Task {
                let connection = try? await connect(on: eventLoop)
                let keep = loopBound.withLock { state in
                    state.opening.remove(id)
                    if connection == nil { state.failedAt = .now }
                    guard let connection, !state.closed else { return false }
                    state.open[id] = connection
                    return true
                }
                if !keep { try? await connection?.close() }
            }
        }
        return held
    }

    /// Closes every open connection.
    func close() async {
        let tasks = slots.withLock { slots in
            defer { slots.connections = Array(repeating: nil, count: slots.connections.count) }
            return slots.connections.compactMap { $0 }
        }
        for task in tasks { try? await task.value.close() }
        let bound = loopBound.withLock { state in
            state.closed = true
            defer { state.open = [:] }
            return Array(state.open.values)
        }
        for connection in bound { try? await connection.close() }
    }
}
