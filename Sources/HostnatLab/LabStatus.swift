import HostnatAddressing
import Foundation
import HostnatContracts
import HostnatDataplane
import HostnatProto

/// `hostnat lab status`: one snapshot of the whole cluster, from the lab's record, the
/// controller's view of its hosts, and each process's own status file.
public struct LabStatusReport: Codable, Sendable {
  public struct ProcessRow: Codable, Sendable {
    public var name: String
    public var pid: Int32
    /// up, paused or down.
    public var state: String
    public var log: String
  }
  public struct HostRow: Codable, Sendable {
    public var host: String
    /// The controller's view (nil when the controller is unreachable).
    public var controllerSeesConnected: Bool?
    public var versionSent: UInt64?
    public var versionAcked: UInt64?
    public var latestVersion: UInt64?
    /// The agent's own view, from its status file.
    public var agentConnected: Bool?
    public var appliedVersion: UInt64?
    public var flows: Int?
    public var drops: UInt64?
    public var packetsIn: UInt64?
    public var packetsOut: UInt64?
  }
  public struct VMRow: Codable, Sendable {
    public var name: String
    public var host: String
    public var ip: String
    public var sent: UInt64
    public var received: UInt64
    public var lost: UInt64
    /// The NAT IP:port the Internet's servers last reported seeing (empty: none seen).
    public var natMapping: String
    public var tcpBroken: UInt64
  }
  public var dir: String
  public var controller: String
  public var controllerReachable: Bool
  public var processes: [ProcessRow]
  public var hosts: [HostRow]
  public var vms: [VMRow]

  public func json() -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
  }

  public func text() -> String {
    func opt<T>(_ v: T?) -> String { v.map { "\($0)" } ?? "-" }
    var out = ["lab \(dir)  controller \(controller) \(controllerReachable ? "reachable" : "UNREACHABLE")", ""]
    out.append(Table.render(header: ["PROCESS", "PID", "STATE", "LOG"], rows: processes.map { [$0.name, "\($0.pid)", $0.state, $0.log] }))
    out.append("")
    out.append(Table.render(
      header: ["HOST", "CONNECTED", "SENT", "ACKED", "APPLIED", "FLOWS", "DROPS"],
      rows: hosts.map {
        [$0.host, $0.agentConnected.map { $0 ? "yes" : "no" } ?? "-", opt($0.versionSent), opt($0.versionAcked),
         opt($0.appliedVersion), opt($0.flows), opt($0.drops)]
      }))
    out.append("")
    out.append(Table.render(
      header: ["VM", "HOST", "IP", "SENT", "RECV", "LOST", "NAT IP:PORT"],
      rows: vms.map { [$0.name, $0.host, $0.ip, "\($0.sent)", "\($0.received)", "\($0.lost)", $0.natMapping.isEmpty ? "-" : $0.natMapping] }))
    return out.joined(separator: "\n")
  }
}

extension Lab {
  public func status() async throws -> LabStatusReport {
    let state = try LabState.load(dir)
    let processes = state.processes.map { p in
      LabStatusReport.ProcessRow(
        name: p.name, pid: p.pid,
        state: Processes.isRunning(p.pid) ? (Processes.isStopped(p.pid) ? "paused" : "up") : "down",
        log: relative(p.log))
    }
    var controllerHosts: [String: Hostnat_V1_HostStatus] = [:]
    var reachable = false
    if let admin = try? LabAdmin(controller: state.controller), let hosts = try? await admin.hosts() {
      reachable = true
      for host in hosts { controllerHosts[host.hostID] = host }
    }
    var hosts: [LabStatusReport.HostRow] = []
    for id in state.agentHosts {
      let agent = state.agentStatus(id)
      let c = controllerHosts[id]
      let drops = agent.map { a in a.dataplane.loop.engineDropsOut + a.dataplane.loop.engineDropsIn + a.dataplane.loop.malformedUnderlay + a.dataplane.loop.unknownVM }
      hosts.append(.init(
        host: id, controllerSeesConnected: c?.connected, versionSent: c?.lastVersionSent, versionAcked: c?.lastVersionAcked,
        latestVersion: c?.latestVersion, agentConnected: agent?.control.connected, appliedVersion: agent?.control.appliedVersion,
        flows: agent?.dataplane.flows, drops: drops,
        packetsIn: agent?.dataplane.loop.received, packetsOut: agent?.dataplane.loop.sent))
    }
    var vms: [LabStatusReport.VMRow] = []
    for p in state.processes where p.name.hasPrefix("vm/") {
      guard let file: VMReportFile = Self.readJSON(p.stateDir + "/report.json") else {
        vms.append(.init(name: String(p.name.dropFirst(3)), host: "-", ip: "-", sent: 0, received: 0, lost: 0, natMapping: "", tcpBroken: 0))
        continue
      }
      vms.append(.init(
        name: file.name, host: file.hostID, ip: file.ip, sent: file.summary.sent, received: file.summary.received,
        lost: file.summary.lost, natMapping: file.summary.latestMapping, tcpBroken: file.summary.tcpBroken))
    }
    return LabStatusReport(dir: relative(dir), controller: state.controller, controllerReachable: reachable, processes: processes, hosts: hosts, vms: vms)
  }

  static func readJSON<T: Decodable>(_ path: String) -> T? {
    guard let data = FileManager.default.contents(atPath: path) else { return nil }
    return try? JSONDecoder().decode(T.self, from: data)
  }
}
