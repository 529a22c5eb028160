import HostnatAddressing
import HostnatControlRules
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

/// How hosts behave while they cannot reach the controller, and so what frees a silent host's
/// quarantined blocks (control.proto rule 8; `hostnat controller --fencing`).
public enum FencingMode: String, Sendable, Equatable, CaseIterable {
  /// Hosts keep translating on their last config for as long as the controller is away; only
  /// an ACK or `hosts forget` frees their blocks.
  case failStatic = "fail-static"
  /// Hosts stop new mappings at lease minus margin and end their flows at the lease; the
  /// controller frees a silent host's blocks once the lease has run out.
  case lease

  var proto: Hostnat_V1_FencingMode { self == .lease ? .lease : .failStatic }
}

/// The controller's fencing settings.
public struct FencingPolicy: Sendable, Equatable {
  public var mode: FencingMode
  /// Lease mode: the lease (nil: the longest idle timeout of any gateway plus a margin, as
  /// before), and how long before it runs out hosts stop making new mappings.
  public var leaseSec: UInt32?
  public var marginSec: UInt32

  public init(mode: FencingMode = .failStatic, leaseSec: UInt32? = nil, marginSec: UInt32 = 2) {
    self.mode = mode
    self.leaseSec = leaseSec
    self.marginSec = marginSec
  }
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
    /// Port requests answered with a block, by host and request id: a retry gets the same answer
    /// (kept in the store too, for a retry across a controller restart).
    var grants: [String: Hostnat_V1_PortGrant] = [:]
    /// The next fabric id to give a new network (never reused).
    var nextFabricID: UInt32 = 1
    /// Who may hold which block, as hosts and the edge say (rule 9).
    var claims = OwnershipClaims()
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
  /// Fencing mode and lease (rule 8).
  public let fencing: FencingPolicy
  /// The store's identity and this controller's epoch (rule 1); the epoch may be raised later by
  /// a host that holds a newer one, so configs read it from the store when they are stamped.
  public let storeID: String
  public let startEpoch: UInt64
  /// When this controller started (Unix ms): a host never heard from since is silent since then.
  let startedMs: Int64
  let logger: Logger
  let nowMs: MillisecondClock
  let state: Mutex<State>
  private let gate = CommitGate()
  /// ACKs from the control streams, handled by `run` so that a stream never waits for a commit.
  let acknowledgements: (stream: AsyncStream<HostAcknowledgement>, continuation: AsyncStream<HostAcknowledgement>.Continuation)

  public init(
    store: ControllerStore, sessions: ControlSessions, autoPools: [String: [String]], fencing: FencingPolicy = FencingPolicy(),
    nowMs: @escaping MillisecondClock = systemMillisecondClock, logger: Logger = Logger(label: "hostnat.controller")
  ) throws {
    self.store = store
    self.sessions = sessions
    self.autoPools = autoPools
    self.fencing = fencing
    // A new epoch, durable before anything is served: every snapshot this run stamps is above
    // every snapshot an earlier run of this store stamped.
    (storeID, startEpoch) = try store.write { tx in (try tx.reader.storeID(), try tx.beginEpoch()) }
    startedMs = nowMs()
    self.nowMs = nowMs
    self.logger = logger
    acknowledgements = AsyncStream<HostAcknowledgement>.makeStream(bufferingPolicy: .unbounded)
    var (intent, snapshot, latestVersions) = try store.read { reader in
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
    // Networks stored before fabric ids were kept get the ids they had (positions by name).
    if intent.networks.contains(where: { $0.fabricID == 0 }) {
      let ids = VPCFabric.ids(intent)
      for i in intent.networks.indices where intent.networks[i].fabricID == 0 { intent.networks[i].fabricID = ids[intent.networks[i].name] ?? 0 }
      let networks = intent.networks
      try store.write { tx in
        for network in networks { try tx.put(.network, key: network.name, network) }
        try tx.raiseFabricIDCounter(to: networks.map(\.fabricID).max() ?? 0)
      }
    }
    let fabricCounter = try store.read { reader in try reader.fabricIDCounter() }
    let grants = try store.read { reader in try reader.recentPortGrants() }
    let planner = try NATPlanner(intent: try IntentMapping.natIntent(intent, autoPools: autoPools), restoring: snapshot)
    // After a restart the version that removed a block is unknown: wait for the host's newest
    // version, which certainly no longer holds it. The lease restarts too (conservative).
    var pending: [UInt64: PendingRelease] = [:]
    let now = nowMs()
    for block in planner.quarantinedBlocks {
      pending[block.id] = PendingRelease(host: block.host, version: latestVersions[block.host] ?? 0, sinceMs: now)
    }
    // What was stored last (a change compares against it), and the claims the hosts and the
    // edge made before this start (rule 9; replaced by their hellos).
    let (configs, claims) = try store.read { reader -> ([String: Hostnat_V1_HostConfig], OwnershipClaims) in
      var configs: [String: Hostnat_V1_HostConfig] = [:]
      var claims = try reader.snapshot("claims").flatMap { try? JSONDecoder().decode(OwnershipClaims.self, from: $0) } ?? OwnershipClaims()
      for record in try reader.hosts() {
        if record.kind == .edge {
          claims.reconciling = true
        } else if let config = try reader.hostConfig(record.hostID) {
          configs[record.hostID] = config.unstamped
        }
      }
      return (configs, claims)
    }
    state = Mutex(State(
      intent: intent, planner: planner, pending: pending, configs: configs, grants: grants, nextFabricID: fabricCounter + 1,
      claims: claims))
  }

  /// The hosts' configs as the desired state computes them, with what the controller adds:
  /// the fencing mode, the lease, and the features each needs (rules 8, 10).
  static func hostConfigs(
    _ intent: StoredIntent, planner: NATPlanner, fencing: FencingPolicy, withheld: [String: Set<BlockKey>] = [:]
  ) -> [String: Hostnat_V1_HostConfig] {
    SnapshotBuilder.hostConfigs(intent, planner: planner).mapValues { config in
      var config = config
      if let keep = withheld[config.hostID], !keep.isEmpty {
        for v in config.vms.indices {
          for n in config.vms[v].nics.indices {
            for b in config.vms[v].nics[n].natBindings.indices {
              config.vms[v].nics[n].natBindings[b].portBlocks.removeAll { keep.contains($0.key) }
            }
          }
        }
      }
      config.fencingMode = fencing.mode.proto
      if fencing.mode == .lease {
        if let lease = fencing.leaseSec { config.ownershipLeaseSec = lease }
        config.fenceMarginSec = min(fencing.marginSec, config.ownershipLeaseSec / 2)
      }
      config.requiredFeatures = ProtocolFeature.required(by: config)
      return config
    }
  }

  /// The ownership lease in force (rule 5, lease mode).
  public var leaseSec: UInt32 {
    fencing.leaseSec ?? SnapshotBuilder.ownershipLeaseSec(planner)
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
      // New networks get the next fabric ids, never one given before (rule: ids are not reused).
      var next = state.nextFabricID
      for i in intent.networks.indices where intent.networks[i].fabricID == 0 {
        intent.networks[i].fabricID = next
        next += 1
      }
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

  /// Quarantined blocks waiting for their old host, by planner id.
  public var pendingReleases: [UInt64: String] {
    state.withLock { state in state.pending.mapValues(\.host) }
  }

  func releaseQuarantined(_ due: (UInt64, PendingRelease) -> Bool) async throws -> ChangeOutcome? {
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
  /// `verify` runs first inside the transaction and throws to change nothing (a precondition
  /// on what is stored); `record` runs last inside it, with the new versions; `remember`
  /// updates the state with the rest of it, under the same lock.
  /// `claims` updates the ownership claims (rule 9) the configs are built with.
  @discardableResult
  func commit(
    verify: (@Sendable (StoreReader) throws -> Void)? = nil,
    record: (@Sendable (StoreTransaction, ChangeOutcome, Int64) throws -> Void)? = nil,
    remember: ((inout State) -> Void)? = nil,
    claims updateClaims: ((inout OwnershipClaims) -> Void)? = nil,
    _ plan: (State) throws -> (StoredIntent, NATPlanner)
  ) async throws -> ChangeOutcome {
    try await gate.withTurn {
      let now = nowMs()
      // Only changes write the state, and they take turns: this copy stays current until ours
      // is done.
      let before = state.withLock { $0 }
      let (intent, planner) = try plan(before)
      let plannerSnapshot = planner.snapshot()
      var claims = before.claims
      updateClaims?(&claims)
      let owners = Self.owners(planner)
      let withheld = claims.withheld(owners)
      if intent == before.intent && plannerSnapshot == before.planner.snapshot()
        && (claims == before.claims || withheld == before.claims.withheld(owners))
      {
        if claims != before.claims {
          let body = try JSONEncoder().encode(claims)
          try await store.commit { tx in try tx.putSnapshot("claims", body) }
          state.withLock { $0.claims = claims }
        }
        return ChangeOutcome(hostVersions: [:], edgeVersion: nil)
      }
      if withheld.hosts.values.contains(where: { !$0.isEmpty }) {
        logger.notice("blocks withheld (rule 9)", metadata: ["hosts": "\(withheld.hosts.mapValues(\.count))", "edge": "\(withheld.edge.count)"])
      }
      let oldConfigs = before.configs
      let builtConfigs = Self.hostConfigs(intent, planner: planner, fencing: fencing, withheld: withheld.hosts)
      var newConfigs = builtConfigs
      // A host whose last VM left gets an empty config, so it stops translating for it.
      for host in oldConfigs.keys where newConfigs[host] == nil {
        newConfigs[host] = .with { $0.hostID = host }
      }
      let snapshot = try JSONEncoder().encode(plannerSnapshot)
      let claimsBody = try JSONEncoder().encode(claims)
      let finalConfigs = newConfigs
      let storeID = self.storeID
      let highestFabricID = intent.networks.map(\.fabricID).max() ?? 0

      let result = try await store.commit { tx -> (ChangeOutcome, [Hostnat_V1_HostConfig], Hostnat_V1_EdgeConfig?, [UInt64: PendingRelease]) in
        try verify?(tx.reader)
        try Self.writeResources(old: before.intent, new: intent, tx: tx)
        try tx.raiseFabricIDCounter(to: highestFabricID)
        let epoch = try tx.reader.epoch()
        try Self.recordAllocations(old: before.planner, new: planner, intent: intent, tx: tx, nowMs: now)
        try tx.putSnapshot("planner", snapshot)
        // The claims a restart starts from (rule 9), with what they withheld.
        try tx.putSnapshot("claims", claimsBody)
        var outcome = ChangeOutcome(hostVersions: [:], edgeVersion: nil)
        var pushes: [Hostnat_V1_HostConfig] = []
        for host in finalConfigs.keys.sorted() {
          guard var config = finalConfigs[host] else { continue }
          if let previous = oldConfigs[host], Self.sameContent(previous, config), try tx.reader.hostConfig(host) != nil {
            continue
          }
          config.stamp(storeID: storeID, epoch: epoch, version: try tx.nextVersion(), nowMs: now)
          try tx.setHostConfig(config, kind: .agent)
          outcome.hostVersions[host] = config.version
          pushes.append(config)
        }
        let edgePush = try Self.storeEdgeConfig(intent: intent, planner: planner, tx: tx, storeID: storeID, nowMs: now, withheld: withheld.edge)
        outcome.edgeVersion = edgePush?.version
        // Blocks this change took away wait for the version that no longer holds them.
        var pending = before.pending.filter { id, _ in planner.quarantinedBlocks.contains { $0.id == id } }
        for block in planner.quarantinedBlocks where pending[block.id] == nil {
          let version = try outcome.hostVersions[block.host] ?? tx.reader.host(block.host)?.latestVersion ?? 0
          pending[block.id] = PendingRelease(host: block.host, version: version, sinceMs: now)
        }
        try record?(tx, outcome, now)
        return (outcome, pushes, edgePush, pending)
      }
      // Only once the transaction committed does memory follow it.
      state.withLock { state in
        state.intent = intent
        state.planner = planner
        state.pending = result.3
        state.configs = builtConfigs
        state.nextFabricID = max(state.nextFabricID, highestFabricID + 1)
        state.claims = claims
        remember?(&state)
      }
      // Durable first, pushed second (control.proto rule: a push never precedes its commit).
      for config in result.1 { sessions.hosts.push(config) }
      if let edgePush = result.2 { sessions.edges.push(edgePush) }
      return result.0
    }
  }

  /// Computes the edge's routes from the hosts' current underlay addresses and stores them under
  /// a new version if they changed; returns what to push, if anything.
  static func storeEdgeConfig(
    intent: StoredIntent, planner: NATPlanner, tx: StoreTransaction, storeID: String, nowMs: Int64, withheld: Set<BlockKey>
  ) throws -> Hostnat_V1_EdgeConfig? {
    let agents = try tx.reader.hosts().filter { $0.kind == .agent }
    let underlays = Dictionary(agents.map { ($0.hostID, $0.underlayAddress) }, uniquingKeysWith: { a, _ in a })
    var edgeConfig = SnapshotBuilder.edgeConfig(intent, planner: planner, underlays: underlays)
    if !withheld.isEmpty {
      edgeConfig.natRoutes.removeAll { withheld.contains(BlockKey(natIP: $0.natIp, firstPort: $0.firstPort, count: $0.count)) }
    }
    if let stored = try tx.reader.edgeConfig(), sameRoutes(stored, edgeConfig) {
      return nil
    }
    edgeConfig.stamp(storeID: storeID, epoch: try tx.reader.epoch(), version: try tx.nextVersion(), nowMs: nowMs)
    try tx.setEdgeConfig(edgeConfig)
    return edgeConfig
  }

  /// Pushes the newest snapshot of each stream again where it is still unanswered. A stream is
  /// reliable, but a push or its ACK can still be lost to a proxy, a bug or a host that failed
  /// to save; a duplicate of the token a host holds is simply ACKed again (rule 1), so resending
  /// is always safe. The registry resends what it last pushed, never a store read: a resend can
  /// never overtake a newer version. Returns how many were resent.
  @discardableResult
  public func resendUnacknowledged() async throws -> Int {
    sessions.hosts.resendUnanswered().count + sessions.edges.resendUnanswered().count
  }

  /// Recomputes the edge's routes from the hosts' current underlay addresses and pushes a new
  /// version if they changed: a host that (re)connects from a new address must get its return
  /// traffic there. Returns the new edge version, if any.
  @discardableResult
  public func refreshEdge() async throws -> UInt64? {
    try await gate.withTurn {
      let now = nowMs()
      let (intent, planner, claims) = state.withLock { ($0.intent, $0.planner, $0.claims) }
      let storeID = self.storeID
      let withheld = claims.withheld(Self.owners(planner)).edge
      let push = try await store.commit { tx in
        try Self.storeEdgeConfig(intent: intent, planner: planner, tx: tx, storeID: storeID, nowMs: now, withheld: withheld)
      }
      if let push { sessions.edges.push(push) }
      return push?.version
    }
  }

  /// Same content: everything but the version and the time stamp (so a field added to a config
  /// is compared without touching this).
  static func sameContent(_ a: Hostnat_V1_HostConfig, _ b: Hostnat_V1_HostConfig) -> Bool {
    a.unstamped == b.unstamped
  }

  static func sameRoutes(_ a: Hostnat_V1_EdgeConfig, _ b: Hostnat_V1_EdgeConfig) -> Bool {
    a.unstamped == b.unstamped
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
    } catch is StaleReport {
      return  // a change overtook it; the next report counts
    } catch {
      logger.error("reclaiming ports failed", metadata: ["host": "\(hostID)", "error": "\(error)"])
    }
  }

  public func helloReceived(_ hello: Hostnat_V1_Hello) async throws {
    try await helloReceived(hello, kind: .agent)
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
