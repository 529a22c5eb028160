import Foundation
import HostnatAddressing
import HostnatControlRules
import HostnatDesiredState
import HostnatPlanner
public import HostnatProto
import Logging
import Synchronization

/// Who may use which block: quarantine released by ACKs, leases (lease mode) and `hosts forget`
/// (control.proto rules 5 and 8), and the hosts' own claims (rule 9).
extension ControllerCore {
  /// Every block the planner gives to a host now (active and drained), with its host.
  static func owners(_ planner: NATPlanner) -> [(block: BlockKey, host: String)] {
    planner.allAllocations.flatMap { allocation in
      (allocation.natIpPortRanges + allocation.drainNatIpPortRanges
        + allocation.ruleAllocations.flatMap { $0.natIpPortRanges + $0.drainNatIpPortRanges }).map { range in
        (BlockKey(natIP: "\(range.natIp)", firstPort: UInt32(range.firstPort), count: UInt32(range.portCount)), allocation.host)
      }
    }
  }

  /// Rule 9 at a hello: records what the host (or the edge) holds; when that changes which
  /// blocks must be withheld, commits the configs that follow, before the hello is answered.
  public func helloReceived(_ hello: Hostnat_V1_Hello, kind: Hostnat_V1_HostKind) async throws {
    try await commit(claims: { claims in claims.hello(hello, kind: kind) }) { state in (state.intent, state.planner) }
  }

  /// Blocks one host holds that the store gives to another (rule 9): withheld from both.
  public var conflicts: [OwnershipConflict] {
    let (claims, planner) = state.withLock { ($0.claims, $0.planner) }
    return claims.conflicts(Self.owners(planner)).map { OwnershipConflict(block: $0.block, holder: $0.claimant, owner: $0.owner) }
      .sorted { ($0.block, $0.holder) < ($1.block, $1.holder) }
  }

  /// A host acknowledged `version`: blocks it gave up by then are no longer its, so they go
  /// back to the pool (and to NICs waiting for ports). Returns nil when nothing was waiting.
  @discardableResult
  public func hostAcknowledged(_ hostID: String, version: UInt64) async throws -> ChangeOutcome? {
    // The host holds exactly its config now, if it ACKed the newest (rule 9): claims it made
    // on blocks it no longer holds are resolved.
    let latest = try await store.fetch { reader in try reader.hostConfig(hostID) }
    if let latest, latest.version == version {
      let holds = Set(latest.vms.flatMap { $0.nics.flatMap { $0.natBindings.flatMap { $0.portBlocks.map(\.key) } } })
      try await commit(claims: { claims in claims.acknowledged(hostID, holds: holds) }) { state in (state.intent, state.planner) }
    }
    return try await releaseQuarantined { id, pending in pending.host == hostID && pending.version <= version }
  }

  /// Lease mode only: frees quarantined blocks of hosts that have been silent for longer than
  /// the ownership lease, by which time such a host has ended every flow and holds its blocks
  /// fenced (rule 8). A connected host is never expired this way; it will ACK. In fail-static
  /// mode a silent host may still be translating: only its ACK or `hosts forget` frees them.
  @discardableResult
  public func expireLeases() async throws -> ChangeOutcome? {
    guard fencing.mode == .lease else { return nil }
    let now = nowMs()
    let leaseMs = Int64(leaseSec) * 1000
    let hosts = sessions.hosts
    // A host silent for the lease has ended its flows and fenced its blocks: its claims go too.
    let expired = state.withLock { Set($0.claims.byHost.keys).union($0.claims.byEdge.keys) }.filter { host in
      let status = hosts.status(host)
      return status?.connected != true && now - (status?.lastSeenMs ?? startedMs) >= leaseMs
    }
    if !expired.isEmpty {
      try await commit(claims: { claims in for host in expired { claims.forget(host) } }) { state in (state.intent, state.planner) }
    }
    return try await releaseQuarantined { id, pending in
      let status = hosts.status(pending.host)
      if status?.connected == true { return false }
      let since = max(pending.sinceMs, status?.lastSeenMs ?? 0)
      return now - since >= leaseMs
    }
  }

  /// `hosts forget HOST`: the operator declares the host gone for good, so the blocks
  /// quarantined for it are freed now, as if it had ACKed (rule 5). Safe only for a host that is
  /// really dead: one that is merely cut off may still translate on them (fail-static), which
  /// is what the warnings say. Returns how many blocks were freed.
  public func forgetHost(_ hostID: String) async throws -> (released: Int, warnings: [String]) {
    var warnings: [String] = []
    if sessions.hosts.status(hostID)?.connected == true {
      warnings.append("\(hostID) is connected now: it will ACK by itself; forgetting it frees nothing it still uses")
    }
    let running = intent.instances.filter { $0.host == hostID }.map(\.name)
    if !running.isEmpty {
      warnings.append("\(hostID) still runs \(running.count) instance(s) (\(running.prefix(5).joined(separator: ", "))); their blocks stay theirs until they are deleted or moved")
    }
    let waiting = pendingReleases.values.filter { $0 == hostID }.count
    if waiting == 0 { warnings.append("no block was waiting for \(hostID)") }
    _ = try await releaseQuarantined { _, pending in pending.host == hostID }
    try await store.commit { tx in try tx.forgetInventory(hostID: hostID) }
    try await commit(claims: { claims in claims.forget(hostID) }) { state in (state.intent, state.planner) }
    logger.warning("host forgotten by the operator", metadata: ["host": "\(hostID)", "releasedBlocks": "\(waiting)"])
    return (waiting, warnings)
  }

}
