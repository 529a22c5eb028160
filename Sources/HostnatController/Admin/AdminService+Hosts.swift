public import GRPCCore
public import HostnatControlRules
import HostnatDesiredState
import HostnatPlanner
public import HostnatProto
import SwiftProtobuf

/// Hosts as the controller sees them: `hosts list` and `hosts forget`.
extension AdminService {
  public func listHosts(request: Hostnat_V1_ListRequest, context: ServerContext) async throws -> Hostnat_V1_ListHostsResponse {
    try await rpc {
      let (records, edge, epoch, latestEpochs) = try await core.store.fetch { reader in
        let records = try reader.hosts()
        var epochs: [String: UInt64] = [:]
        for record in records where record.kind == .agent { epochs[record.hostID] = try reader.hostConfig(record.hostID)?.epoch }
        return (records, try reader.edgeConfig(), try reader.epoch(), epochs)
      }
      let edgeVersion = edge?.version ?? 0
      let instances = Dictionary(grouping: core.intent.instances, by: \.host).mapValues(\.count)
      let conflicts = core.conflicts
      let quarantined = Dictionary(grouping: core.pendingReleases.values, by: { $0 }).mapValues(\.count)
      return .with {
        $0.storeID = core.storeID
        $0.epoch = epoch
        $0.fencingMode = core.fencing.mode.rawValue
        $0.conflictingBlocks = Int32(conflicts.count)
        $0.hosts = records.map { record in
          let live = record.kind == .edge ? core.sessions.edges.status(record.hostID) : core.sessions.hosts.status(record.hostID)
          return .with {
            $0.hostID = record.hostID
            $0.kind = record.kind
            $0.connected = live?.connected ?? false
            $0.bootID = live?.bootID ?? record.bootID
            // The edge's routing snapshot is one for every edge; hosts each have their own.
            $0.latestVersion = record.kind == .edge ? edgeVersion : record.latestVersion
            $0.latestEpoch = record.kind == .edge ? edge?.epoch ?? 0 : latestEpochs[record.hostID] ?? 0
            $0.lastVersionSent = live?.lastSent ?? 0
            $0.lastVersionAcked = max(record.ackedVersion, live?.lastAcked ?? 0)
            $0.ackedEpoch = max(record.ackedEpoch, live?.ackedEpoch ?? 0)
            $0.lastNackReason = record.lastNack
            $0.lastSeenMs = live?.lastSeenMs ?? 0
            $0.underlayAddress = record.underlayAddress
            $0.instances = Int32(record.kind == .agent ? instances[record.hostID] ?? 0 : 0)
            $0.features = live?.features ?? record.features
            $0.heldBack = live?.heldBack ?? ""
            $0.heldBlocks = Int32(record.inventory.count)
            $0.conflictingBlocks = conflicts.filter { $0.holder == record.hostID && record.kind == .agent }.map(\.description)
            $0.quarantinedBlocks = Int32(record.kind == .agent ? quarantined[record.hostID] ?? 0 : 0)
            $0.ignoredAcks = live?.ignoredAcks ?? 0
            $0.refusedHellos = live?.refusedHellos ?? 0
            $0.refusedMessages = live?.refusedMessages ?? 0
            $0.fenced = live?.fenced ?? false
            $0.alarm = live?.alarm ?? ""
          }
        }
      }
    }
  }

  public func forgetHost(request: Hostnat_V1_ForgetHostRequest, context: ServerContext) async throws -> Hostnat_V1_ForgetHostResponse {
    try await rpc {
      guard !request.hostID.isEmpty else { throw AdminError(.invalidArgument, field: "hostId", reason: "must not be empty") }
      let known = try await core.store.fetch { reader in try reader.host(request.hostID) != nil }
      guard known || core.pendingReleases.values.contains(request.hostID) else {
        throw AdminError(.notFound, field: "hostId", reason: "no host \(request.hostID.debugDescription) is known to the controller")
      }
      let (released, warnings) = try await core.forgetHost(request.hostID)
      return .with {
        $0.releasedBlocks = Int32(released)
        $0.warnings = warnings
      }
    }
  }
}

/// A block one host says it holds (its last Hello) that the store gives to another host
/// (control.proto rule 9): what a controller restored from an old backup sees.
public struct OwnershipConflict: Sendable, Equatable, CustomStringConvertible {
  public var block: BlockKey
  public var holder: String
  public var owner: String

  public init(block: BlockKey, holder: String, owner: String) {
    self.block = block
    self.holder = holder
    self.owner = owner
  }

  public var description: String { "\(block) held by \(holder), given to \(owner)" }
}

