import Foundation
import HostnatAddressing
import HostnatControlRules
import HostnatDesiredState
import HostnatPlanner
public import HostnatProto
import SwiftProtobuf
import Synchronization

/// Dynamic port allocation: grants (idempotent by request id) and reclaims (from usage reports
/// of the current config, idle blocks only).
extension ControllerCore {
  /// Dynamic port allocation: answers a host's request for more ports for one of its VM NICs
  /// with one more block (doubling the NIC's ports, up to the gateway's max ports per VM). The
  /// grant is one durable transaction like any change and the host's new config version is
  /// pushed; the grant message names that version. Refusals change nothing and say why.
  /// A request repeated with the same id (a retry) gets the first answer, never a second block.
  public func grantPorts(hostID: String, request: Hostnat_V1_PortRequest) async -> Hostnat_V1_PortGrant {
    struct Refusal: Error { var reason: String }
    struct Answered: Error { var grant: Hostnat_V1_PortGrant }
    let requestKey = "\(hostID)\u{0}\(request.requestID)"
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
    let granted = Mutex<NATPortRange?>(nil)
    let answer = Mutex<Hostnat_V1_PortGrant?>(nil)
    do {
      _ = try await commit(
        record: { tx, outcome, nowMs in
          guard let range = granted.withLock({ $0 }) else { return }
          let grant = Hostnat_V1_PortGrant.with {
            $0.requestID = request.requestID
            $0.block = .with {
              $0.natIp = "\(range.natIp)"
              $0.firstPort = UInt32(range.firstPort)
              $0.count = UInt32(range.portCount)
            }
            $0.version = outcome.hostVersions[hostID] ?? 0
            $0.epoch = (try? tx.reader.epoch()) ?? 0
          }
          answer.withLock { $0 = grant }
          try tx.recordPortGrant(hostID: hostID, requestID: request.requestID, grant, atMs: nowMs, pruneBeforeMs: nowMs - 600_000)
        },
        remember: { state in
          guard let grant = answer.withLock({ $0 }) else { return }
          if state.grants.count >= 4096 { state.grants.removeAll() }
          state.grants[requestKey] = grant
        }
      ) { state in
        if let earlier = state.grants[requestKey] { throw Answered(grant: earlier) }
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
            granted.withLock { $0 = range }
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
      guard let grant = answer.withLock({ $0 }) else { return refused("nothing granted") }
      return grant
    } catch let earlier as Answered {
      return earlier.grant
    } catch let refusal as Refusal {
      return refused(refusal.reason)
    } catch {
      return refused("the controller could not record the grant: \(error)")
    }
  }

  /// Dynamic port allocation, the other way: shrinks NICs whose usage fell (the planner decides
  /// how far), from a host's usage report. Only a report computed under the config the host
  /// was pushed last counts (an older one may miss flows made since), and a NIC gives back only
  /// blocks the report lists as idle. Reclaimed blocks are quarantined until the host ACKs a
  /// config without them. Returns nil when nothing was reclaimed.
  @discardableResult
  public func reclaimPorts(hostID: String, report: Hostnat_V1_PortUsageReport) async throws -> ChangeOutcome? {
    let reclaimed = Mutex(false)
    let latest = try await store.fetch { reader in try reader.hostConfig(hostID).map { ($0.epoch, $0.version) } }
    guard let latest, latest == (report.appliedEpoch, report.appliedVersion) else { return nil }
    let outcome = try await commit(
      verify: { reader in
        // A change committed since the report was read makes it stale.
        guard try reader.hostConfig(hostID).map({ ($0.epoch, $0.version) }) ?? (0, 0) == latest else { throw StaleReport() }
      }
    ) { state in
      var planner = state.planner
      for usage in report.nics {
        guard usage.nic.hasPrefix("nic"), let nicIndex = Int(usage.nic.dropFirst(3)) else { continue }
        let idle = Set(usage.idleBlocks.map(\.key))
        for allocation in planner.allocations(instance: usage.instance)
        where allocation.nic.nicIndex == nicIndex && allocation.host == hostID {
          var trial = planner
          let taken = trial.reclaim(allocation.nic, portsInUse: Int(usage.portsInUse))
          guard !taken.isEmpty else { continue }
          let keys = taken.map { BlockKey(natIP: "\($0.natIp)", firstPort: UInt32($0.firstPort), count: UInt32($0.portCount)) }
          guard keys.allSatisfy(idle.contains) else { continue }
          planner = trial
          reclaimed.withLock { $0 = true }
        }
      }
      return reclaimed.withLock { $0 } ? (state.intent, planner) : (state.intent, state.planner)
    }
    return reclaimed.withLock { $0 } ? outcome : nil
  }

  struct StaleReport: Error {}

}
