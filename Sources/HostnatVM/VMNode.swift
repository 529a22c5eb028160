public import HostnatAddressing
import Foundation
import HostnatContracts
public import HostnatDataplane
public import HostnatInternet
import HostnatPackets
public import HostnatWorkload
public import ServiceLifecycle

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
  public func spec() throws(FieldError) -> WorkloadSpec {
    let echo = servers.filter { $0.services.contains(.udpEcho) && $0.services.contains(.tcpEcho) }
    guard let primary = echo.first else { throw FieldError(field: "--server", reason: "no server offers udp-echo and tcp-echo") }
    let secondary = echo.dropFirst().first ?? primary
    guard let nat = servers.first(where: { $0.services.contains(.stun) && $0.services.contains(.filteringProbe) }) else {
      throw FieldError(field: "--server", reason: "no server offers stun and filtering-probe")
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

/// A VM: a workload behind its host's agent, speaking Geneve to it on the underlay. A service:
/// traffic runs until graceful shutdown, then replies in flight are waited for and the final
/// report is written.
public final class VMNode: Service, Sendable {
  public let options: VMOptions
  public let dataplane: VMDataplane<Workload>

  public init(options: VMOptions) throws {
    self.options = options
    let workload = Workload(name: options.name, ip: options.ip, spec: try options.spec(), seed: UInt64(truncatingIfNeeded: options.ip.value) &* 0x9E37_79B9)
    let socket = try UDPSocket(binding: options.underlay)
    dataplane = VMDataplane(socket: socket, agent: options.agent, workloads: [(ip: options.ip, workload: workload)])
  }

  public func run() async throws {
    dataplane.start()
    await cancelWhenGracefulShutdown {
      while !Task.isCancelled {
        self.writeReport()
        try? await Task.sleep(for: .seconds(1))
      }
    }
    stop()
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
