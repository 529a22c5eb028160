import Foundation
public import HostnatDataplane
public import HostnatInternet
public import HostnatPackets
public import HostnatWorkload

/// How to start a VM workload (`hostnat vm`).
public struct VMOptions: Sendable {
  public var hostID: String
  public var name: String
  public var ip: IPv4Address
  public var agent: SocketAddress
  public var underlay = SocketAddress(ip: IPv4Address(127, 0, 0, 1), port: 0)
  public var reportPath: String
  public var servers: [ServerSpec] = InternetServers.labDefault
  public var udpPps: Double = 20
  public var tcpChurnPerSec: Double = 4
  public var pingPps: Double = 5

  public init(hostID: String, name: String, ip: IPv4Address, agent: SocketAddress, reportPath: String) {
    self.hostID = hostID
    self.name = name
    self.ip = ip
    self.agent = agent
    self.reportPath = reportPath
  }

  /// The standard mix against the given servers: echo and TCP on the first echo server, new
  /// connections and what-is-my-IP on the second, STUN and the filtering probe where STUN runs.
  public func spec() throws(ConfigRejection) -> WorkloadSpec {
    let echo = servers.filter { $0.services.contains(.udpEcho) && $0.services.contains(.tcpEcho) }
    guard let primary = echo.first else { throw ConfigRejection("--server: no server offers udp-echo and tcp-echo") }
    let secondary = echo.dropFirst().first ?? primary
    guard let nat = servers.first(where: { $0.services.contains(.stun) && $0.services.contains(.filteringProbe) }) else {
      throw ConfigRejection("--server: no server offers stun and filtering-probe")
    }
    let base: UInt16 = 40_000
    return WorkloadSpec(flows: [
      .udpEcho(server: primary.ip, srcPort: base, ratePerSec: udpPps),
      .tcpEcho(server: primary.ip, srcPort: base + 1, ratePerSec: 10),
      .tcpChurn(server: secondary.ip, ratePerSec: tcpChurnPerSec),
      .ping(server: primary.ip, identifier: base + 2, ratePerSec: pingPps),
      // Same source port to two servers: endpoint-independent mapping shows as one NAT IP:port.
      .whoami(server: secondary.ip, srcPort: base + 3, ratePerSec: 2),
      .stun(server: nat.ip, srcPort: base + 3, ratePerSec: 2),
      .filteringProbe(server: nat.ip, srcPort: base + 4, ratePerSec: 1),
    ].filter { $0.ratePerSecond > 0 })
  }
}

/// The few numbers the lab reads from a VM's report, computed by the VM itself.
public struct VMSummary: Codable, Sendable, Equatable {
  public var sent: UInt64 = 0
  public var received: UInt64 = 0
  /// No reply within the loss timeout, including `late` ones.
  public var lost: UInt64 = 0
  /// Counted in `lost`, but the reply came after all: delayed, not lost.
  public var late: UInt64 = 0
  public var inFlight: UInt64 = 0
  /// The NAT IP:port the what-is-my-IP server saw last ("" when none).
  public var latestMapping: String = ""
  public var tcpEstablished: UInt64 = 0
  public var tcpBroken: UInt64 = 0
  public var churnAttempted: UInt64 = 0
  public var churnSucceeded: UInt64 = 0
  public var churnFailed: UInt64 = 0
  /// Whether whoami and STUN, reached from one source port, saw the same NAT IP:port (nil: not both seen).
  public var eimSameMapping: Bool?
  public var probeAcks: UInt64 = 0
  public var unsolicited: UInt64 = 0

  public init() {}

  public init(_ report: WorkloadReport) {
    for flow in report.flows {
      sent += UInt64(flow.sent)
      received += UInt64(flow.received)
      lost += UInt64(flow.lost)
      late += UInt64(flow.late)
      inFlight += UInt64(flow.inFlight)
      unsolicited += UInt64(flow.unsolicited)
      if let tcp = flow.tcp {
        tcpEstablished += UInt64(tcp.established)
        tcpBroken += UInt64(tcp.broken)
      }
      if let churn = flow.churn {
        churnAttempted += UInt64(churn.attempted)
        churnSucceeded += UInt64(churn.succeeded)
        churnFailed += UInt64(churn.failed)
      }
      if flow.kind == .filteringProbe { probeAcks += UInt64(flow.received) }
    }
    let whoami = report.flows.first { $0.kind == .whoami }
    let stun = report.flows.first { $0.kind == .stun }
    latestMapping = whoami?.latestMapping ?? stun?.latestMapping ?? ""
    if let w = whoami?.mappings, let s = stun?.mappings, !w.isEmpty, !s.isEmpty {
      eimSameMapping = Set(w) == Set(s)
    }
  }
}

/// What a VM process writes to its report file every second and when it stops.
public struct VMReportFile: Codable, Sendable {
  public var hostID: String
  public var name: String
  public var ip: String
  public var pid: Int32
  public var writtenMs: Int64
  public var summary: VMSummary
  public var report: WorkloadReport
}

/// A VM: a workload behind its host's agent, speaking Geneve to it on the underlay.
public final class VMNode: Sendable {
  public let options: VMOptions
  public let dataplane: VMDataplane<Workload>

  public init(options: VMOptions) throws {
    self.options = options
    let workload = Workload(name: options.name, ip: options.ip, spec: try options.spec(), seed: UInt64(truncatingIfNeeded: options.ip.value) &* 0x9E37_79B9)
    let socket = try UDPSocket(binding: options.underlay)
    dataplane = VMDataplane(socket: socket, agent: options.agent, workloads: [(ip: options.ip, workload: workload)])
  }

  public func run() async {
    dataplane.start()
    while !Task.isCancelled {
      writeReport()
      try? await Task.sleep(for: .seconds(1))
    }
  }

  /// Stops new traffic, waits (bounded) for replies still in flight, writes the final report.
  public func stop() {
    dataplane.withWorkloads { $0.forEach { $0.workload.stop(now: DataplaneClock.now()) } }
    let deadline = ContinuousClock.now + .seconds(3)
    while ContinuousClock.now < deadline, !dataplane.withWorkloads({ $0.allSatisfy(\.workload.drained) }) {
      usleep(20_000)
    }
    dataplane.stop()
    writeReport()
  }

  public var report: WorkloadReport {
    dataplane.withWorkloads { $0[0].workload.report(now: DataplaneClock.now()) }
  }

  func writeReport() {
    let report = self.report
    StatusFile.write(
      VMReportFile(
        hostID: options.hostID, name: options.name, ip: "\(options.ip)", pid: getpid(), writtenMs: nowMs(),
        summary: VMSummary(report), report: report),
      to: options.reportPath)
  }
}
