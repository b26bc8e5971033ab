import AsyncHTTPClient
import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import Shared

/// The agent's job loop: says hello, sends heartbeats, claims jobs with long
/// polls, verifies each spec against the trusted keys, runs it with the
/// executor for its kind while keeping the lease, and reports the outcome.
///
/// Every connection goes out from the agent; it needs no inbound port. When
/// the control plane cannot be reached the agent backs off and keeps trying;
/// a finished job's completion is retried until the control plane answers.
public struct AgentRunner: Service {
    let configuration: AgentConfiguration
    let executors: [any JobExecutor]
    let client: ControlPlaneClient
    /// The agent's own HTTP client: with a connection per long poll, lease
    /// extensions and completions never queue behind waiting claims.
    let http: HTTPClient
    let logger: Logger
    /// This process's id, sent with hello, heartbeats and claims.
    public let instanceID: String
    let running = RunningJobs()
    /// The last refusal of an announced key set, logged once.
    let keysRefused = NIOLockedValueBox<String?>(nil)
    /// Where verified specs are kept for when the control plane is unreachable.
    let definitionCache: DefinitionCache?
    /// The workspace's access snapshot, kept current from the control plane.
    let accessGuard: AccessGuard?
    /// The workspace's registry snapshot, likewise.
    let registryCache: RegistryCache?
    /// The control plane keys this agent accepts, moved along key rotations.
    public let trustedKeys: TrustedSigningKeys
    /// How often the snapshots are asked for even without a heartbeat saying they changed.
    static let snapshotPollSeconds = 30

    /// Why the agent stopped.
    public struct Refusal: Error, CustomStringConvertible {
        /// What is wrong.
        public let description: String
    }

    /// Creates a runner.
    public init(
        configuration: AgentConfiguration, executors: [any JobExecutor], logger: Logger, definitionCache: DefinitionCache? = nil,
        accessGuard: AccessGuard? = nil, registryCache: RegistryCache? = nil, trustedKeys: TrustedSigningKeys? = nil,
        instanceID: String = UUID().uuidString.lowercased()
    ) {
        self.configuration = configuration
        self.trustedKeys = trustedKeys ?? TrustedSigningKeys(configuration: configuration, logger: logger)
        self.definitionCache = definitionCache
        self.accessGuard = accessGuard
        self.registryCache = registryCache
        self.executors = executors
        let soft = configuration.concurrency * 3 + 4
        self.http = ControlPlaneConnection.makeHTTPClient(caFile: configuration.caFile) {
            $0.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = soft
        }
        if let file = configuration.tokenFile {
            // Re-read when the file changes: `larder-agent rotate-credentials` replaces it while the agent runs.
            let token = TokenFile(path: file, initial: configuration.token)
            self.client = ControlPlaneClient(
                baseURL: configuration.controlPlaneURL, tokenProvider: { token.current() }, httpClient: self.http, timeout: .seconds(90))
        } else {
            self.client = ControlPlaneClient(
                baseURL: configuration.controlPlaneURL, token: configuration.token, httpClient: self.http, timeout: .seconds(90))
        }
        self.logger = logger
        self.instanceID = instanceID
    }

    /// The job kinds this agent can run.
    public var kinds: [JobKind] {
        JobKind.allCases.filter { kind in executors.contains { $0.kinds.contains(kind) } }
    }

    public func run() async throws {
        defer { Task { [http] in try? await http.shutdown() } }
        try await cancelWhenGracefulShutdown {
            let welcome: AgentWelcome
            do { welcome = try await sayHello() } catch is CancellationError {
                return   // asked to stop before the control plane answered: a clean stop
            }
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await sendHeartbeats(every: welcome.heartbeatSeconds, welcome: welcome) }
                if accessGuard != nil || registryCache != nil { group.addTask { await pollSnapshots(welcome) } }
                if kinds.isEmpty {
                    logger.notice("this agent has no job executors, so it claims no jobs")
                } else {
                    for _ in 0..<configuration.concurrency { group.addTask { await claimJobs(welcome) } }
                }
                await group.waitForAll()
            }
        }
    }

    /// Says hello until the control plane answers, and checks that it signs
    /// with the key this agent pins.
    func sayHello() async throws -> AgentWelcome {
        let hello = AgentHello(
            instanceId: instanceID, version: LarderVersion.number, hostname: ProcessInfo.processInfo.hostName, capabilities: kinds,
            onlineStore: configuration.onlineStore.kind)
        var delay = 0.5
        var removedDelay = Self.removedBackoffStart
        while true {
            try Task.checkCancellation()
            do {
                let welcome = try await client.hello(hello)
                if let announcement = welcome.signingKeys {
                    do { try acceptKeys(announcement) } catch { throw Refusal(description: error.description) }
                }
                let trusted = trustedKeys.current
                guard trusted.contains(where: { $0.fingerprint == welcome.signingKeyFingerprint }) else {
                    throw Refusal(description: """
                        the control plane signs job specs with key \(welcome.signingKeyFingerprint), but this agent trusts \
                        \(trusted.map(\.fingerprint).joined(separator: ", ")); check public_key against 'larder-control key list'
                        """)
                }
                if let pinned = configuration.workspace, welcome.workspace != pinned {
                    throw Refusal(description: "the control plane says this agent serves workspace '\(welcome.workspace)', but it was enrolled into '\(pinned)'")
                }
                logger.info("connected to the control plane", metadata: [
                    "larder.agent": .string(welcome.agent), "larder.workspace": .string(welcome.workspace),
                    "larder.environment": .string(welcome.environment), "larder.instance": .string(instanceID),
                    "larder.kinds": .string(kinds.map(\.rawValue).joined(separator: ",")),
                ])
                return welcome
            } catch let problem as ProblemDetails where problem.isAgentRemoved {
                // Removed (or disabled): keep serving from the local stores, and ask again only every few minutes.
                logger.error("this agent was removed from the control plane; asking again later", metadata: [
                    "larder.error": .string(problem.detail), "larder.retry_seconds": "\(removedDelay)",
                ])
                try await Task.sleep(for: .seconds(removedDelay))
                removedDelay = min(removedDelay * 2, Self.removedBackoffLimit)
            } catch let problem as ProblemDetails where problem.status == 401 || problem.status == 403 {
                throw Refusal(description: "the control plane refused this agent's token: \(problem.detail)")
            } catch let refusal as Refusal {
                throw refusal
            } catch {
                if Task.isCancelled { throw CancellationError() }
                if let problem = error as? ProblemDetails, problem.type.hasSuffix(":agent-version-unsupported") {
                    // Upgrading: the control plane goes first; until it has, this agent serves but claims nothing.
                    logger.error("the control plane does not accept this agent's release; retrying", metadata: [
                        "larder.error": .string(problem.detail), "larder.retry_seconds": "\(delay)",
                    ])
                } else if let problem = error as? ProblemDetails,
                          problem.type.hasSuffix(":embedded-store-taken") || problem.type.hasSuffix(":online-store-mismatch") {
                    // Its environment will not take it as configured: it serves what it holds, claims nothing, and asks again.
                    logger.error("the control plane refused this agent in its environment; retrying", metadata: [
                        "larder.error": .string(problem.detail), "larder.retry_seconds": "\(delay)",
                    ])
                } else {
                    logger.warning("cannot reach the control plane; retrying", metadata: [
                        "larder.error": .string(String(describing: error)), "larder.retry_seconds": "\(delay)",
                    ])
                }
                try await Task.sleep(for: .seconds(delay))
                delay = min(delay * 2, 30)
            }
        }
    }

    func sendHeartbeats(every seconds: Int, welcome: AgentWelcome) async {
        var refused = false
        var removedDelay: Double?
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(max(Double(seconds), 1, removedDelay ?? 0)))
            if Task.isCancelled { return }
            do {
                let reply = try await client.heartbeat(AgentHeartbeat(
                    instanceId: instanceID, runningJobs: await running.ids, keyGeneration: trustedKeys.generation))
                refused = false
                removedDelay = nil
                if let announcement = reply.signingKeys {
                    do { try acceptKeys(announcement) } catch {
                        // Specs and snapshots signed by a key it does not trust are refused as they come.
                        if keysRefused.withLockedValue({ $0 }) != error.description {
                            logger.error("refused the control plane's signing keys", metadata: ["larder.error": .string(error.description)])
                            keysRefused.withLockedValue { $0 = error.description }
                        }
                    }
                }
                for job in reply.abort { await running.abort(job) }
                // Access or the registry changed: fetch the new snapshot now rather than at the next poll.
                if let version = reply.accessVersion, accessGuard.map({ $0.version.map { version > $0 } ?? true }) == true {
                    await refreshAccess(welcome)
                }
                if let revision = reply.registryRevision, registryCache.map({ $0.revision.map { revision > $0 } ?? true }) == true {
                    await refreshRegistry(welcome)
                }
            } catch let problem as ProblemDetails where problem.status == 401 || problem.status == 403 {
                // Removed, or its token revoked: no more jobs. Serving goes on from the local stores and snapshots.
                if problem.isAgentRemoved { removedDelay = min((removedDelay ?? Self.removedBackoffStart / 2) * 2, Self.removedBackoffLimit) }
                if !refused {
                    logger.error("the control plane refused this agent's token: it no longer claims jobs", metadata: [
                        "larder.error": .string(problem.detail),
                    ])
                }
                refused = true
            } catch {
                logger.debug("heartbeat failed", metadata: ["larder.error": .string(String(describing: error))])
            }
        }
    }

    /// Accepts an announced key set and logs what changed.
    func acceptKeys(_ announcement: [SignedDocument]) throws(TrustedSigningKeys.Refusal) {
        guard let change = try trustedKeys.accept(announcement) else { return }
        keysRefused.withLockedValue { $0 = nil }
        let fingerprints = { (keys: [String]) in keys.compactMap { try? SigningPublicKey(parsing: $0).fingerprint }.joined(separator: ",") }
        logger.notice("accepted the control plane's signing keys", metadata: [
            "larder.key_generation": "\(change.generation)", "larder.keys_added": .string(fingerprints(change.added)),
            "larder.keys_dropped": .string(fingerprints(change.dropped)),
        ])
    }

    /// Asks for the snapshots at once, then every `snapshotPollSeconds`.
    func pollSnapshots(_ welcome: AgentWelcome) async {
        while !Task.isCancelled {
            await refreshAccess(welcome)
            await refreshRegistry(welcome)
            try? await Task.sleep(for: .seconds(Self.snapshotPollSeconds))
        }
    }

    /// Fetches the registry snapshot if the control plane has a newer one, and installs it.
    func refreshRegistry(_ welcome: AgentWelcome) async {
        guard let registryCache else { return }
        await refresh("registry snapshot") {
            let reply = try await client.registrySnapshot(RegistrySnapshotRequest(instanceId: instanceID, haveRevision: registryCache.revision))
            guard let document = reply.snapshot else { return nil }
            let snapshot = try registryCache.install(document, workspace: pinnedWorkspace(welcome))
            return ["larder.registry_revision": "\(snapshot.revision)", "larder.objects": "\(snapshot.definitions.count)"]
        }
    }

    /// Fetches the access snapshot if the control plane has a newer one (or the
    /// one held is past half its validity), and installs it.
    func refreshAccess(_ welcome: AgentWelcome) async {
        guard let accessGuard else { return }
        await refresh("access snapshot") {
            // Past half its validity, ask for the snapshot even at the same version: the control plane
            // then signs a fresh one, so an agent whose workspace's access never changes does not fail closed.
            let haveVersion = accessGuard.needsRenewal(now: Date()) ? nil : accessGuard.version
            let reply = try await client.accessSnapshot(AccessSnapshotRequest(instanceId: instanceID, haveVersion: haveVersion))
            guard let document = reply.snapshot else { return nil }
            let snapshot = try accessGuard.install(document, workspace: pinnedWorkspace(welcome))
            return ["larder.access_version": "\(snapshot.version)", "larder.tokens": "\(snapshot.entries.count)"]
        }
    }

    /// Runs one snapshot refresh: logs what `fetch` installed (its metadata), or
    /// that the held snapshot stays when the fetch failed.
    func refresh(_ name: String, fetch: () async throws -> Logger.Metadata?) async {
        do {
            if let installed = try await fetch() { logger.info("installed the \(name)", metadata: installed) }
        } catch {
            if Task.isCancelled { return }
            logger.warning("cannot refresh the \(name); keeping the one held", metadata: ["larder.error": .string(String(describing: error))])
        }
    }

    func claimJobs(_ welcome: AgentWelcome) async {
        var delay = 0.5
        let wait = max(0, min(20, welcome.maxClaimWaitSeconds))
        while !Task.isCancelled {
            do {
                guard let claimed = try await client.claim(ClaimRequest(instanceId: instanceID, kinds: kinds, waitSeconds: wait)) else {
                    delay = 0.5
                    continue
                }
                delay = 0.5
                await run(claimed, welcome: welcome)
            } catch {
                if Task.isCancelled { return }
                // Refused (removed, revoked): ask again only every few minutes; otherwise back off to 30 s.
                let refused = (error as? ProblemDetails).map { $0.status == 401 || $0.status == 403 } ?? false
                if refused { delay = max(delay, Self.removedBackoffStart) }
                logger.warning("claim failed; retrying", metadata: [
                    "larder.error": .string(String(describing: error)), "larder.retry_seconds": "\(delay)",
                ])
                try? await Task.sleep(for: .seconds(delay))
                delay = min(delay * 2, refused ? Self.removedBackoffLimit : 30)
            }
        }
    }

    /// What ends a job's run first.
    enum Ending: Sendable {
        case finished(Result<JobMetrics, any Error>)
        case cancelRequested
        case leaseLost
    }

    /// Runs one claimed job and reports how it ended.
    func run(_ claimed: ClaimedJob, welcome: AgentWelcome) async {
        var metadata: Logger.Metadata = ["larder.job": "\(claimed.id)", "larder.attempt": "\(claimed.attempt)"]
        let spec: JobSpec
        do {
            spec = try verify(claimed, welcome: welcome)
        } catch {
            logger.error("refused a job spec", metadata: metadata.merging(["larder.reason": .string("\(error)")]) { $1 })
            await complete(claimed, JobCompletion(
                leaseToken: claimed.leaseToken, outcome: .failed, startedAt: Date(), finishedAt: Date(),
                failure: JobFailure(message: "the agent refused the job spec: \(error)", retryable: false)))
            return
        }
        metadata["larder.kind"] = .string(spec.kind.rawValue)
        if let view = spec.featureView { metadata["larder.view"] = .string(view) }
        do { try definitionCache?.store(claimed.spec, spec: spec) } catch {
            logger.warning("cannot cache the job's definitions", metadata: metadata.merging(["larder.reason": .string("\(error)")]) { $1 })
        }
        guard let executor = executors.first(where: { $0.kinds.contains(spec.kind) }) else {
            await complete(claimed, JobCompletion(
                leaseToken: claimed.leaseToken, outcome: .failed, startedAt: Date(), finishedAt: Date(),
                failure: JobFailure(message: "this agent cannot run \(spec.kind.rawValue) jobs", retryable: true)))
            return
        }
        let startedAt = Date()
        let (aborts, abortSink) = AsyncStream.makeStream(of: Void.self)
        await running.add(claimed.id, abort: abortSink)
        logger.info("running job", metadata: metadata)
        let client = self.client, logger = self.logger
        let leaseInterval = Duration.milliseconds(max(200, welcome.leaseSeconds * 1_000 / 3))
        // The lease by the agent's own clock: from the claim, moved on by each extension. Counted from
        // when the claim or extension was sent, so a slow answer never makes it look longer than it is.
        let leaseEnds = LeaseClock(until: Date().addingTimeInterval(Double(welcome.leaseSeconds)))
        // The work runs on a task of its own, not a child: a lost lease or a cancellation must not wait for
        // it when it is stuck (a statement on a connection the database ended is never answered). Whatever
        // it still writes after that is fenced (the offline store refuses a stale lease's term).
        let (endings, endingSink) = AsyncStream.makeStream(of: Ending.self)
        let outcome = NIOLockedValueBox<Result<JobMetrics, any Error>?>(nil)
        let work = Task {
            _ = try? await client.reportProgress(job: claimed.id, token: claimed.leaseToken, progress: JobProgress(phase: "started"))
            let context = JobContext(
                attempt: claimed.attempt, leaseTerm: claimed.leaseTerm, leaseDuration: .milliseconds(welcome.leaseSeconds * 1_000),
                leaseHeld: { leaseEnds.held() }
            ) { progress in
                _ = try? await client.reportProgress(job: claimed.id, token: claimed.leaseToken, progress: progress)
            }
            let result: Result<JobMetrics, any Error>
            do { result = .success(try await executor.execute(spec, context: context)) } catch { result = .failure(error) }
            outcome.withLockedValue { $0 = result }
            endingSink.yield(.finished(result))
        }
        var ending: Ending? = await withTaskCancellationHandler {
            await withTaskGroup(of: Void.self) { group -> Ending? in
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: leaseInterval)
                    if Task.isCancelled { return }
                    // Paused (SIGSTOP, a long stall) or cut off past the lease: the job is someone
                    // else's now; stop writing before asking.
                    if !leaseEnds.held() {
                        endingSink.yield(.leaseLost)
                        return
                    }
                    let sent = Date()
                    do {
                        let status = try await client.extendLease(job: claimed.id, token: claimed.leaseToken)
                        if status.cancelRequested {
                            endingSink.yield(.cancelRequested)
                            return
                        }
                        leaseEnds.extend(until: sent.addingTimeInterval(Double(welcome.leaseSeconds)))
                    } catch let problem as ProblemDetails where problem.status == 409 || problem.status == 404 {
                        endingSink.yield(.leaseLost)
                        return
                    } catch {
                        logger.warning("could not extend a lease; retrying until it runs out", metadata: ["larder.job": "\(claimed.id)"])
                    }
                }
            }
            group.addTask {
                for await _ in aborts {
                    endingSink.yield(.cancelRequested)
                    return
                }
            }
            var ending: Ending?
            for await next in endings {
                ending = next
                break
            }
            group.cancelAll()
            abortSink.finish()
            return ending
            }
        } onCancel: {
            // The agent is stopping: the work stops too, and reports how it ended.
            work.cancel()
        }
        endingSink.finish()
        if ending.map({ if case .finished = $0 { return false } else { return true } }) ?? true {
            // Lost, cancelled or stopping: from now on the work's every check of the lease fails, so
            // whatever it still reaches (a commit, a publish) writes nothing.
            leaseEnds.revoke()
            work.cancel()
            if await !Self.settle(work, within: .seconds(max(1, welcome.leaseSeconds))) {
                logger.warning("the job's work did not stop once cancelled; left it behind (its offline writes are fenced)", metadata: metadata)
            }
        }
        // Stopped before anything else ended the job: it ends as its work did.
        if ending == nil { ending = outcome.withLockedValue { $0 }.map { .finished($0) } ?? .leaseLost }
        let finishedAt = Date()
        await running.remove(claimed.id)
        switch ending ?? .leaseLost {
        case .finished(.success(let metrics)):
            logger.info("job succeeded", metadata: metadata.merging(["larder.rows_written": "\(metrics.rowsWritten)"]) { $1 })
            await complete(claimed, JobCompletion(
                leaseToken: claimed.leaseToken, outcome: .succeeded, startedAt: startedAt, finishedAt: finishedAt, metrics: metrics))
        case .finished(.failure(let error)):
            // An error the executor did not put in words is reported by its codes only (ReportedErrors.swift).
            let failure = (error as? JobExecutionError).map { JobFailure(message: $0.message, retryable: $0.retryable) }
                ?? JobFailure(message: Task.isCancelled ? "the agent stopped" : "the job failed: \(ReportedError.codes(error))", retryable: true)
            var details = metadata.merging(["larder.error": .string(failure.message)]) { $1 }
            if let local = (error as? JobExecutionError)?.localDetail { details["larder.detail"] = .string(local) }
            if !(error is JobExecutionError) { details["larder.detail"] = .string(String(reflecting: error)) }
            logger.warning("job failed", metadata: details)
            await complete(claimed, JobCompletion(
                leaseToken: claimed.leaseToken, outcome: .failed, startedAt: startedAt, finishedAt: finishedAt,
                metrics: (error as? JobExecutionError)?.metrics, failure: failure))
        case .cancelRequested:
            logger.notice("job cancelled", metadata: metadata)
            await complete(claimed, JobCompletion(
                leaseToken: claimed.leaseToken, outcome: .cancelled, startedAt: startedAt, finishedAt: finishedAt))
        case .leaseLost:
            logger.warning("lost the lease on a job; abandoned it", metadata: metadata)
        }
    }

    /// The spec of a claimed job, if it verifies with the pinned key and names
    /// this job and workspace.
    func verify(_ claimed: ClaimedJob, welcome: AgentWelcome, now: Date = Date()) throws -> JobSpec {
        let payload = try trustedKeys.verify(claimed.spec)
        let spec = try JobSpec(verified: payload)
        guard spec.jobId == claimed.id else { throw Refusal(description: "the spec is for job \(spec.jobId), not \(claimed.id)") }
        let workspace = pinnedWorkspace(welcome)
        guard spec.workspace == workspace else {
            throw Refusal(description: "the spec is for workspace '\(spec.workspace)', not '\(workspace)'")
        }
        // Bound to this claim, and fresh: a spec copied from another claim (or replayed later) is refused.
        guard spec.attempt == claimed.attempt, spec.leaseToken == claimed.leaseToken, spec.leaseTerm == claimed.leaseTerm else {
            throw Refusal(description: "the spec is not bound to this claim (attempt \(claimed.attempt)): refused")
        }
        // The expiry is the control plane's clock (the claim's first lease end, also in the claim): it must be
        // that one, and not long past by this host's clock, allowing for hosts whose clocks disagree.
        guard let expiry = spec.expiresAt, abs(expiry.timeIntervalSince(claimed.leaseExpiresAt)) < 1,
              expiry > now.addingTimeInterval(-Self.clockSkewAllowance)
        else {
            throw Refusal(description: "the spec has expired, or its expiry is not the claim's: refused")
        }
        return spec
    }

    /// How long a refused (removed) agent waits before asking again, at first and at most.
    static let removedBackoffStart = 60.0, removedBackoffLimit = 600.0

    /// How far this host's clock may be ahead of the control plane's before a fresh spec looks expired.
    static let clockSkewAllowance: TimeInterval = 300

    /// The workspace every spec and snapshot must name: the one pinned at
    /// enrollment, or (configured by hand without one) the hello answer's.
    func pinnedWorkspace(_ welcome: AgentWelcome) -> String { configuration.workspace ?? welcome.workspace }

    /// Reports an attempt's end, retrying while the control plane cannot be
    /// reached; gives up when it refuses (the lease is gone). Runs to the end
    /// even when the agent is shutting down.
    func complete(_ claimed: ClaimedJob, _ completion: JobCompletion) async {
        let client = self.client, logger = self.logger
        await Task {
            var delay = 0.25
            let deadline = ContinuousClock.now + .seconds(900)
            while ContinuousClock.now < deadline {
                do {
                    _ = try await client.complete(job: claimed.id, completion)
                    return
                } catch let problem as ProblemDetails {
                    logger.warning("the control plane refused a job's completion", metadata: [
                        "larder.job": "\(claimed.id)", "larder.problem": .string(problem.code), "larder.detail": .string(problem.detail),
                    ])
                    return
                } catch {
                    logger.warning("cannot report a job's completion; retrying", metadata: [
                        "larder.job": "\(claimed.id)", "larder.retry_seconds": "\(delay)",
                    ])
                    try? await Task.sleep(for: .seconds(delay))
                    delay = min(delay * 2, 5)
                }
            }
        }.value
    }
}

/// The jobs this agent runs, with a way to abort each.
actor RunningJobs {
    private var jobs: [Int64: AsyncStream<Void>.Continuation] = [:]

    var ids: [Int64] { jobs.keys.sorted() }

    func add(_ id: Int64, abort: AsyncStream<Void>.Continuation) { jobs[id] = abort }

    func remove(_ id: Int64) { jobs.removeValue(forKey: id) }

    func abort(_ id: Int64) { jobs[id]?.yield() }
}

extension AgentRunner {
    /// Waits for `work` to end, at most `limit`; false when it did not (the
    /// waiting stops, the work is left to end when it can).
    static func settle(_ work: Task<Void, Never>, within limit: Duration) async -> Bool {
        let settled = NIOLockedValueBox<CheckedContinuation<Bool, Never>?>(nil)
        return await withCheckedContinuation { continuation in
            settled.withLockedValue { $0 = continuation }
            let resume = { @Sendable (value: Bool) in settled.withLockedValue { $0.take() }?.resume(returning: value) }
            Task {
                await work.value
                resume(true)
            }
            Task {
                try? await Task.sleep(for: limit)
                resume(false)
            }
        }
    }
}

/// When the agent's lease on one job ends, by its own clock. A margin is
/// kept, so the agent stops writing a little before the control plane hands
/// the job to someone else.
final class LeaseClock: Sendable {
    private let ends: NIOLockedValueBox<Date>
    /// How long before the end the lease counts as gone.
    let margin: TimeInterval

    init(until end: Date, margin: TimeInterval = 0.5) {
        ends = NIOLockedValueBox(end)
        self.margin = margin
    }

    /// Moves the end on (never back), unless the lease was revoked.
    func extend(until end: Date) { ends.withLockedValue { $0 = $0 == .distantPast ? $0 : max($0, end) } }

    /// Ends the lease now, for good.
    func revoke() { ends.withLockedValue { $0 = .distantPast } }

    /// Whether the lease is still held now.
    func held(now: Date = Date()) -> Bool { ends.withLockedValue { now.addingTimeInterval(margin) < $0 } }
}
