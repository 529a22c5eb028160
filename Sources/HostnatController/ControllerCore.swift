import HostnatAddressing
import Foundation
public import Logging
public import HostnatDesiredState
public import HostnatPlanner
public import HostnatProto
import SwiftProtobuf
import Synchronization

/// What one committed change produced.
public struct ChangeOutcome: Sendable, Equatable {
  /// New config version per host whose config changed.
  public var hostVersions: [String: UInt64]
  /// New edge routing version, if the routes changed.
  public var edgeVersion: UInt64?
}

/// The controller's brain: holds the intent and the planner, and turns each admin change into
/// one durable transaction (intent + allocation history + planner snapshot + new config
/// versions), committed before anything is pushed. On start it restores the planner from its
/// snapshot, so a restart never moves a VM's ports.
///
/// Changes run one at a time, in arrival order (`CommitGate`). Each plans from the state under
/// a short lock, commits on the store's own queue (the fsync never blocks the cooperative pool,
/// and readers of the state never wait for it), then updates the state and pushes, in that
/// order: a push never precedes its commit and versions only go up.
public final class ControllerCore: Sendable {
  struct State: Sendable {
    var intent: StoredIntent
    var planner: NATPlanner
    /// Quarantined blocks (planner ids) and what frees them: their old host ACKing `version`,
    /// or the ownership lease running out after `sinceMs` (control.proto rule 5).
    var pending: [UInt64: PendingRelease] = [:]
    /// Content (unversioned) of every host's committed config, so a change compares against it
    /// instead of rebuilding the previous configs from the previous intent.
    var configs: [String: Hostnat_V1_HostConfig] = [:]
  }

  struct PendingRelease: Equatable, Sendable {
    var host: String
    var version: UInt64
    var sinceMs: Int64
  }

  public let store: ControllerStore
  /// Where committed configs are pushed, and the hosts' live status.
  public let sessions: ControlSessions
  /// Region → IPs that AUTO_ONLY gateways take, in order.
  public let autoPools: [String: [String]]
  let logger: Logger
  private let nowMs: MillisecondClock
  private let state: Mutex<State>
  private let gate = CommitGate()
  /// ACKs from the control streams, handled by `run` so that a stream never waits for a commit.
  let acknowledgements: (stream: AsyncStream<HostAcknowledgement>, continuation: AsyncStream<HostAcknowledgement>.Continuation)

  public init(
    store: ControllerStore, sessions: ControlSessions, autoPools: [String: [String]],
    nowMs: @escaping MillisecondClock = systemMillisecondClock, logger: Logger = Logger(label: "hostnat.controller")
  ) throws {
    self.store = store
    self.sessions = sessions
    self.autoPools = autoPools
    self.nowMs = nowMs
    self.logger = logger
    acknowledgements = AsyncStream<HostAcknowledgement>.makeStream(bufferingPolicy: .unbounded)
    let (intent, snapshot, latestVersions) = try store.read { reader in
      var intent = StoredIntent()
      intent.networks = try reader.resources(.network, as: Hostnat_V1_Network.self)
      intent.subnets = try reader.resources(.subnet, as: Hostnat_V1_Subnet.self)
      intent.routers = try reader.resources(.router, as: Hostnat_V1_Router.self)
      intent.addresses = try reader.resources(.address, as: Hostnat_V1_Address.self)
      intent.instances = try reader.resources(.instance, as: Hostnat_V1_Instance.self)
      intent.firewallRules = try reader.resources(.firewallRule, as: Hostnat_V1_FirewallRule.self)
      intent.routes = try reader.resources(.route, as: Hostnat_V1_Route.self)
      intent.projects = try reader.resources(.project, as: Hostnat_V1_Project.self)
      intent.connectors = try reader.resources(.connector, as: Hostnat_V1_ServerlessConnector.self)
      intent.services = try reader.resources(.service, as: Hostnat_V1_ServerlessService.self)
      let snapshot = try reader.snapshot("planner").map { try JSONDecoder().decode(NATPlannerSnapshot.self, from: $0) }
      let latest = Dictionary(try reader.hosts().map { ($0.hostID, $0.latestVersion) }, uniquingKeysWith: { a, _ in a })
      return (intent, snapshot, latest)
    }
    let planner = try NATPlanner(intent: try IntentMapping.natIntent(intent, autoPools: autoPools), restoring: snapshot)
    // After a restart the version that removed a block is unknown: wait for the host's newest
    // version, which certainly no longer holds it. The lease restarts too (conservative).
    var pending: [UInt64: PendingRelease] = [:]
    let now = nowMs()
    for block in planner.quarantinedBlocks {
      pending[block.id] = PendingRelease(host: block.host, version: latestVersions[block.host] ?? 0, sinceMs: now)
    }
    let configs = SnapshotBuilder.hostConfigs(intent, planner: planner)
    state = Mutex(State(intent: intent, planner: planner, pending: pending, configs: configs))
  }

  /// The controller's clock, now (Unix ms).
  public var nowMsValue: Int64 { nowMs() }

  /// The current intent.
  public var intent: StoredIntent { state.withLock { $0.intent } }

  /// The current planner (a value: reading it never waits for a commit).
  public var planner: NATPlanner { state.withLock { $0.planner } }

  /// Applies `edit` to the intent, plans, and commits; then pushes every changed config.
  /// `edit` and the planner validate everything before the store is touched, so a refused
  /// change leaves intent, allocations and versions exactly as they were.
  @discardableResult
  public func change(_ edit: (inout StoredIntent) throws -> Void) async throws -> ChangeOutcome {
    let autoPools = self.autoPools
    return try await commit { state in
      var intent = state.intent
      try edit(&intent)
      try VPCChecks.validate(intent)
      var planner = state.planner
      do {
        _ = try planner.apply(try IntentMapping.natIntent(intent, autoPools: autoPools))
      } catch let error as PlannerValidationError {
        throw AdminError(.invalidArgument, field: error.field, reason: error.reason)
      }
      return (intent, planner)
    }
  }

  /// A host acknowledged `version`: blocks it gave up by then are no longer its, so they go
  /// back to the pool (and to NICs waiting for ports). Returns nil when nothing was waiting.
  @discardableResult
  public func hostAcknowledged(_ hostID: String, version: UInt64) async throws -> ChangeOutcome? {
    try await releaseQuarantined { id, pending in pending.host == hostID && pending.version <= version }
  }

  /// Frees quarantined blocks of hosts that have been silent for longer than the ownership
  /// lease: every flow they could still hold has timed out by then. A connected host is never
  /// expired this way; it will ACK.
  @discardableResult
  public func expireLeases() async throws -> ChangeOutcome? {
    let now = nowMs()
    let leaseMs = Int64(SnapshotBuilder.ownershipLeaseSec(planner)) * 1000
    let hosts = sessions.hosts
    return try await releaseQuarantined { id, pending in
      let status = hosts.status(pending.host)
      if status?.connected == true { return false }
      let since = max(pending.sinceMs, status?.lastSeenMs ?? 0)
      return now - since >= leaseMs
    }
  }

  /// Runs until cancelled or a store error: releases quarantined blocks as hosts ACK (the
  /// control streams report them through `acknowledged`), checks ownership leases every
  /// `leaseCheckInterval` and resends unacknowledged configs every `resendInterval`.
  public func run(leaseCheckInterval: Duration = .seconds(5), resendInterval: Duration = .seconds(2)) async throws {
    let acks = acknowledgements.stream
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask {
        for await ack in acks {
          try await self.hostAcknowledged(ack.hostID, version: ack.version)
        }
      }
      group.addTask {
        while true {
          try await Task.sleep(for: leaseCheckInterval)
          try await self.expireLeases()
        }
      }
      group.addTask {
        while true {
          try await Task.sleep(for: resendInterval)
          try await self.resendUnacknowledged()
        }
      }
      defer { group.cancelAll() }
      do {
        try await group.next()
      } catch is CancellationError {
        return
      }
    }
  }

  /// Ends the stream of ACKs that `run` reads (graceful shutdown).
  public func finishAcknowledgements() {
    acknowledgements.continuation.finish()
  }

  /// Dynamic port allocation: answers a host's request for more ports for one of its VM NICs
  /// with one more block (doubling the NIC's ports, up to the gateway's max ports per VM). The
  /// grant is one durable transaction like any change and the host's new config version is
  /// pushed; the grant message names that version. Refusals change nothing and say why.
  public func grantPorts(hostID: String, request: Hostnat_V1_PortRequest) async -> Hostnat_V1_PortGrant {
    struct Refusal: Error { var reason: String }
    func refused(_ reason: String) -> Hostnat_V1_PortGrant {
      .with {
        $0.requestID = request.requestID
        $0.refusedReason = reason
      }
    }
    guard request.nic.hasPrefix("nic"), let nicIndex = Int(request.nic.dropFirst(3)) else {
      return refused("\"\(request.nic)\" is not a NIC name (nic0, nic1, ...)")
    }
    let nicName = "\(request.instance)/\(request.nic)"
    var granted: NATPortRange?
    do {
      let outcome = try await commit { state in
        let allocations = state.planner.allocations(instance: request.instance).filter { $0.nic.nicIndex == nicIndex }
        guard !allocations.isEmpty else { throw Refusal(reason: "no NAT gateway translates \(nicName)") }
        var reasons: [String] = []
        for allocation in allocations {
          guard allocation.host == hostID else {
            throw Refusal(reason: "\(request.instance) runs on \(allocation.host), not \(hostID)")
          }
          var planner = state.planner
          switch planner.grant(allocation.nic) {
          case .granted(let range):
            granted = range
            return (state.intent, planner)
          case .atMaximum:
            reasons.append("\(nicName) is at the maximum ports per VM of gateway \(allocation.nic.gateway)")
          case .noFreePorts:
            reasons.append("gateway \(allocation.nic.gateway) has no free NAT ports left")
          case .notDynamic:
            reasons.append("gateway \(allocation.nic.gateway) does not use dynamic port allocation")
          case .waitingForNatPorts:
            reasons.append("\(nicName) has not received its minimum ports yet")
          case .unknownNic:
            reasons.append("gateway \(allocation.nic.gateway) does not translate \(nicName)")
          }
        }
        throw Refusal(reason: reasons.joined(separator: "; "))
      }
      guard let granted else { return refused("nothing granted") }
      return .with {
        $0.requestID = request.requestID
        $0.block = .with {
          $0.natIp = "\(granted.natIp)"
          $0.firstPort = UInt32(granted.firstPort)
          $0.count = UInt32(granted.portCount)
        }
        $0.version = outcome.hostVersions[hostID] ?? 0
      }
    } catch let refusal as Refusal {
      return refused(refusal.reason)
    } catch {
      return refused("the controller could not record the grant: \(error)")
    }
  }

  /// Dynamic port allocation, the other way: shrinks NICs whose usage fell (the planner decides
  /// how far), from a host's usage report. Reclaimed blocks are quarantined until the host
  /// ACKs a config without them. Returns nil when nothing was reclaimed.
  @discardableResult
  public func reclaimPorts(hostID: String, report: Hostnat_V1_PortUsageReport) async throws -> ChangeOutcome? {
    var reclaimed = false
    let outcome = try await commit { state in
      var planner = state.planner
      for usage in report.nics {
        guard usage.nic.hasPrefix("nic"), let nicIndex = Int(usage.nic.dropFirst(3)) else { continue }
        for allocation in planner.allocations(instance: usage.instance)
        where allocation.nic.nicIndex == nicIndex && allocation.host == hostID {
          if !planner.reclaim(allocation.nic, portsInUse: Int(usage.portsInUse)).isEmpty { reclaimed = true }
        }
      }
      return reclaimed ? (state.intent, planner) : (state.intent, state.planner)
    }
    return reclaimed ? outcome : nil
  }

  /// Quarantined blocks waiting for their old host, by planner id.
  public var pendingReleases: [UInt64: String] {
    state.withLock { state in state.pending.mapValues(\.host) }
  }

  private func releaseQuarantined(_ due: (UInt64, PendingRelease) -> Bool) async throws -> ChangeOutcome? {
    var released = false
    let outcome = try await commit { state in
      let ids = state.pending.filter { due($0.key, $0.value) }.map(\.key)
      var planner = state.planner
      if !ids.isEmpty {
        released = true
        _ = planner.releaseQuarantined(ids)
      }
      return (state.intent, planner)
    }
    return released ? outcome : nil
  }

  /// Plans from the state, commits one transaction, updates the state, then pushes; one change
  /// at a time. `plan` returns the new intent and planner, or throws to change nothing.
  private func commit(_ plan: (State) throws -> (StoredIntent, NATPlanner)) async throws -> ChangeOutcome {
    try await gate.withTurn {
      let now = nowMs()
      // Only changes write the state, and they take turns: this copy stays current until ours
      // is done.
      let before = state.withLock { $0 }
      let (intent, planner) = try plan(before)
      let plannerSnapshot = planner.snapshot()
      if intent == before.intent && plannerSnapshot == before.planner.snapshot() {
        return ChangeOutcome(hostVersions: [:], edgeVersion: nil)
      }
      let oldConfigs = before.configs
      let builtConfigs = SnapshotBuilder.hostConfigs(intent, planner: planner)
      var newConfigs = builtConfigs
      // A host whose last VM left gets an empty config, so it stops translating for it.
      for host in oldConfigs.keys where newConfigs[host] == nil {
        newConfigs[host] = .with { $0.hostID = host }
      }
      let snapshot = try JSONEncoder().encode(plannerSnapshot)
      let finalConfigs = newConfigs

      let result = try await store.commit { tx -> (ChangeOutcome, [Hostnat_V1_HostConfig], Hostnat_V1_EdgeConfig?, [UInt64: PendingRelease]) in
        try Self.writeResources(old: before.intent, new: intent, tx: tx)
        try Self.recordAllocations(old: before.planner, new: planner, intent: intent, tx: tx, nowMs: now)
        try tx.putSnapshot("planner", snapshot)
        var outcome = ChangeOutcome(hostVersions: [:], edgeVersion: nil)
        var pushes: [Hostnat_V1_HostConfig] = []
        for host in finalConfigs.keys.sorted() {
          guard var config = finalConfigs[host] else { continue }
          if let previous = oldConfigs[host], Self.sameContent(previous, config), try tx.reader.hostConfig(host) != nil {
            continue
          }
          config.version = try tx.nextVersion()
          config.generatedMs = now
          try tx.setHostConfig(config, kind: .agent)
          outcome.hostVersions[host] = config.version
          pushes.append(config)
        }
        let edgePush = try Self.storeEdgeConfig(intent: intent, planner: planner, tx: tx, nowMs: now)
        outcome.edgeVersion = edgePush?.version
        // Blocks this change took away wait for the version that no longer holds them.
        var pending = before.pending.filter { id, _ in planner.quarantinedBlocks.contains { $0.id == id } }
        for block in planner.quarantinedBlocks where pending[block.id] == nil {
          let version = try outcome.hostVersions[block.host] ?? tx.reader.host(block.host)?.latestVersion ?? 0
          pending[block.id] = PendingRelease(host: block.host, version: version, sinceMs: now)
        }
        return (outcome, pushes, edgePush, pending)
      }
      // Only once the transaction committed does memory follow it.
      state.withLock { state in
        state.intent = intent
        state.planner = planner
        state.pending = result.3
        state.configs = builtConfigs
      }
      // Durable first, pushed second (control.proto rule: a push never precedes its commit).
      for config in result.1 { sessions.hosts.push(config) }
      if let edgePush = result.2 { sessions.edges.push(edgePush) }
      return result.0
    }
  }

  /// Computes the edge's routes from the hosts' current underlay addresses and stores them under
  /// a new version if they changed; returns what to push, if anything.
  static func storeEdgeConfig(intent: StoredIntent, planner: NATPlanner, tx: StoreTransaction, nowMs: Int64) throws -> Hostnat_V1_EdgeConfig? {
    let underlays = Dictionary(try tx.reader.hosts().map { ($0.hostID, $0.underlayAddress) }, uniquingKeysWith: { a, _ in a })
    var edgeConfig = SnapshotBuilder.edgeConfig(intent, planner: planner, underlays: underlays)
    if let stored = try tx.reader.edgeConfig(), sameRoutes(stored, edgeConfig) {
      return nil
    }
    edgeConfig.version = try tx.nextVersion()
    edgeConfig.generatedMs = nowMs
    try tx.setEdgeConfig(edgeConfig)
    return edgeConfig
  }

  /// Pushes the latest snapshot again to every connected host (and edge) that has not ACKed it.
  /// A stream is reliable, but a push or its ACK can still be lost to a proxy, a bug or a host
  /// that failed to save; a duplicate of the version a host holds is simply ACKed again
  /// (control.proto rule 1), so resending is always safe. Returns how many were resent.
  @discardableResult
  public func resendUnacknowledged() async throws -> Int {
    let connected = sessions.hosts.statuses().filter(\.connected).map { ($0.hostID, $0.lastAcked) }
    let (hostConfigs, edgeConfig) = try await store.fetch { reader -> ([Hostnat_V1_HostConfig], Hostnat_V1_EdgeConfig?) in
      var configs: [Hostnat_V1_HostConfig] = []
      for (hostID, lastAcked) in connected {
        if let config = try reader.hostConfig(hostID), config.version > lastAcked { configs.append(config) }
      }
      return (configs, try reader.edgeConfig())
    }
    for config in hostConfigs { sessions.hosts.push(config) }
    var resent = hostConfigs.count
    if let edgeConfig {
      for status in sessions.edges.statuses() where status.connected && edgeConfig.version > status.lastAcked {
        sessions.edges.push(edgeConfig, to: status.hostID)
        resent += 1
      }
    }
    return resent
  }

  /// Recomputes the edge's routes from the hosts' current underlay addresses and pushes a new
  /// version if they changed: a host that (re)connects from a new address must get its return
  /// traffic there. Returns the new edge version, if any.
  @discardableResult
  public func refreshEdge() async throws -> UInt64? {
    try await gate.withTurn {
      let now = nowMs()
      let (intent, planner) = state.withLock { ($0.intent, $0.planner) }
      let push = try await store.commit { tx in try Self.storeEdgeConfig(intent: intent, planner: planner, tx: tx, nowMs: now) }
      if let push { sessions.edges.push(push) }
      return push?.version
    }
  }

  /// Same content: everything but the version and the time stamp (so a field added to a config
  /// is compared without touching this).
  static func sameContent(_ a: Hostnat_V1_HostConfig, _ b: Hostnat_V1_HostConfig) -> Bool {
    equalIgnoringStamps(a, b) { $0.version = 0; $0.generatedMs = 0 }
  }

  static func sameRoutes(_ a: Hostnat_V1_EdgeConfig, _ b: Hostnat_V1_EdgeConfig) -> Bool {
    equalIgnoringStamps(a, b) { $0.version = 0; $0.generatedMs = 0 }
  }

  static func equalIgnoringStamps<C: Equatable>(_ a: C, _ b: C, clear: (inout C) -> Void) -> Bool {
    var a = a
    var b = b
    clear(&a)
    clear(&b)
    return a == b
  }

  static func writeResources(old: StoredIntent, new: StoredIntent, tx: StoreTransaction) throws {
    func sync<M: SwiftProtobuf.Message & Equatable>(_ kind: ResourceKind, _ old: [M], _ new: [M], key: (M) -> String) throws {
      let before = Dictionary(old.map { (key($0), $0) }, uniquingKeysWith: { a, _ in a })
      let after = Dictionary(new.map { (key($0), $0) }, uniquingKeysWith: { a, _ in a })
      for (name, value) in after where before[name] != value { try tx.put(kind, key: name, value) }
      for name in before.keys where after[name] == nil { try tx.delete(kind, key: name) }
    }
    try sync(.network, old.networks, new.networks) { $0.name }
    try sync(.subnet, old.subnets, new.subnets) { "\($0.region)/\($0.name)" }
    try sync(.router, old.routers, new.routers) { "\($0.region)/\($0.name)" }
    try sync(.address, old.addresses, new.addresses) { "\($0.region)/\($0.name)" }
    try sync(.instance, old.instances, new.instances) { $0.name }
    try sync(.firewallRule, old.firewallRules, new.firewallRules) { $0.name }
    try sync(.route, old.routes, new.routes) { $0.name }
    try sync(.project, old.projects, new.projects) { $0.id }
    try sync(.connector, old.connectors, new.connectors) { "\($0.region)/\($0.name)" }
    try sync(.service, old.services, new.services) { "\($0.region)/\($0.name)" }
  }

  /// Keeps the allocation history (who-had) in step: blocks that appeared are granted, blocks
  /// that disappeared are released, drained flags follow.
  static func recordAllocations(old: NATPlanner, new: NATPlanner, intent: StoredIntent, tx: StoreTransaction, nowMs: Int64) throws {
    struct Key: Hashable {
      var gateway, instance: String
      var nic: Int
      var natIP: String
      var firstPort, count: Int
    }
    func blocks(_ planner: NATPlanner) -> [Key: (host: String, drained: Bool)] {
      var result: [Key: (host: String, drained: Bool)] = [:]
      for allocation in planner.allAllocations {
        let rules = allocation.ruleAllocations
        let active = allocation.natIpPortRanges + rules.flatMap(\.natIpPortRanges)
        let drainedRanges = allocation.drainNatIpPortRanges + rules.flatMap(\.drainNatIpPortRanges)
        for (ranges, drained) in [(active, false), (drainedRanges, true)] {
          for range in ranges {
            let key = Key(
              gateway: allocation.nic.gateway, instance: allocation.nic.instance, nic: allocation.nic.nicIndex,
              natIP: "\(range.natIp)", firstPort: range.firstPort, count: range.portCount)
            result[key] = (allocation.host, drained)
          }
        }
      }
      return result
    }
    let after = blocks(new)
    guard blocks(old).mapValues(\.drained) != after.mapValues(\.drained) else { return }
    var live: [Key: AllocationRecord] = [:]
    for record in try tx.reader.liveAllocations() {
      let nic = Int(record.nic.dropFirst(3)) ?? 0
      live[Key(gateway: record.gateway, instance: record.instance, nic: nic, natIP: record.natIP, firstPort: record.firstPort, count: record.count)] = record
    }
    for (key, value) in after {
      if let record = live[key] {
        if record.drained != value.drained { try tx.setDrained(id: record.id, value.drained) }
      } else {
        try tx.grant(AllocationRecord(
          gateway: key.gateway, instance: key.instance, nic: "nic\(key.nic)", host: value.host, natIP: key.natIP,
          firstPort: key.firstPort, count: key.count, drained: value.drained, grantedMs: nowMs))
      }
    }
    for (key, record) in live where after[key] == nil {
      try tx.release(id: record.id, atMs: nowMs)
    }
  }
}

extension ControllerCore: HostControlEvents {
  public func portRequested(hostID: String, _ request: Hostnat_V1_PortRequest) async -> Hostnat_V1_PortGrant {
    let grant = await grantPorts(hostID: hostID, request: request)
    logger.info(
      "port request", metadata: ["host": "\(hostID)", "nic": "\(request.instance)/\(request.nic)",
        "result": "\(grant.refusedReason.isEmpty ? "granted \(grant.block.natIp):\(grant.block.firstPort)+\(grant.block.count)" : grant.refusedReason)"])
    return grant
  }

  public func usageReported(hostID: String, _ report: Hostnat_V1_PortUsageReport) async {
    do {
      try await reclaimPorts(hostID: hostID, report: report)
    } catch {
      logger.error("reclaiming ports failed", metadata: ["host": "\(hostID)", "error": "\(error)"])
    }
  }

  public func acknowledged(_ ack: HostAcknowledgement) {
    acknowledgements.continuation.yield(ack)
  }

  public func connected(_ hello: Hostnat_V1_Hello) async {
    do {
      if let version = try await refreshEdge() {
        logger.info("edge routes follow host", metadata: ["host": "\(hello.hostID)", "underlay": "\(hello.underlayAddress)", "edgeVersion": "\(version)"])
      }
    } catch {
      logger.error("refreshing edge routes failed", metadata: ["host": "\(hello.hostID)", "error": "\(error)"])
    }
  }
}
