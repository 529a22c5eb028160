import HostnatAddressing
import Foundation
import HostnatContracts
import HostnatDataplane
import HostnatProto

/// `hostnat lab top`: the cluster on one 80-column screen, refreshed every second.
public struct LabTop: Sendable {
  public var lab: Lab

  public init(lab: Lab) { self.lab = lab }

  /// Packet counters per host at the previous refresh, for rates.
  public struct Sample: Sendable {
    var packets: [String: UInt64] = [:]
    var at: ContinuousClock.Instant = .now
    public init() {}
  }

  /// One screen, and the sample to diff the next one against.
  public func render(previous: Sample?) async throws -> (String, Sample) {
    let state = try LabState.load(lab.dir)
    let status = try await lab.status()
    var sample = Sample()
    let elapsed = previous.map { (ContinuousClock.now - $0.at) } ?? .seconds(1)
    let seconds = max(0.001, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    var out: [String] = []
    let up = status.processes.filter { $0.state == "up" }.count
    out.append("hostnat lab top  \(Self.clock())  \(up)/\(status.processes.count) processes up  controller \(status.controllerReachable ? "reachable" : "DOWN")")
    out.append("")
    var hostRows: [[String]] = []
    var agents: [String: AgentStatus] = [:]
    for host in state.agentHosts { agents[host] = state.agentStatus(host) }
    for host in status.hosts {
      let packets = (host.packetsIn ?? 0) + (host.packetsOut ?? 0)
      sample.packets[host.host] = packets
      let pps = previous?.packets[host.host].map { Int(Double(packets &- $0) / seconds) }
      hostRows.append([
        host.host, host.agentConnected.map { $0 ? "yes" : "NO" } ?? "-",
        "v\(host.versionAcked.map(String.init) ?? "-")/v\(host.latestVersion.map(String.init) ?? "-")",
        host.flows.map(String.init) ?? "-", pps.map(String.init) ?? "-", host.drops.map(String.init) ?? "-",
      ])
    }
    out.append(Table.render(header: ["HOST", "CONNECTED", "ACKED/LATEST", "FLOWS", "PPS", "DROPS"], rows: hostRows))
    out.append("")
    var vmRows: [[String]] = []
    var allocatedByIP: [String: Int] = [:]
    for vm in status.vms {
      let agent = agents[vm.host]
      let ports = agent?.ports?[vm.name]
      let drops = agent?.dataplane.vms[vm.name].map { $0.drops.values.reduce(0, +) }
      vmRows.append([
        vm.name, vm.host, ports?.natIPs.joined(separator: ",").nonEmpty ?? "-",
        ports.map { "\($0.inUse)/\($0.allocated)" } ?? "-", drops.map(String.init) ?? "-", "\(vm.lost)",
      ])
    }
    for host in state.agentHosts {
      for block in state.heldConfig(host)?.vms.flatMap({ $0.nics.flatMap { $0.natBindings.flatMap(\.portBlocks) } }) ?? [] {
        allocatedByIP[block.natIp, default: 0] += Int(block.count)
      }
    }
    out.append(Table.render(header: ["VM", "HOST", "NAT IP", "PORTS USED", "DROPS", "LOST"], rows: vmRows))
    out.append("")
    let ipRows = allocatedByIP.keys.sorted().map { ip -> [String] in
      let share = Double(allocatedByIP[ip] ?? 0) / 64_512
      let bar = String(repeating: "#", count: min(30, Int((share * 30).rounded(.up))))
      return [ip, "\(allocatedByIP[ip] ?? 0)/64512", String(format: "%5.1f%%", share * 100), bar]
    }
    out.append(Table.render(header: ["NAT IP", "ALLOCATED", "SHARE", ""], rows: ipRows))
    return (out.joined(separator: "\n"), sample)
  }

  static func clock() -> String {
    let formatter = DateFormatter()
    formatter.dateFormat = "HH:mm:ss"
    return formatter.string(from: Date())
  }
}

extension String {
  var nonEmpty: String? { isEmpty ? nil : self }
}
