public import HostnatAddressing
import Foundation
import HostnatContracts
import HostnatInternet
import HostnatDataplane
import HostnatPackets
import HostnatProto
import HostnatWorkload
import SwiftProtobuf

/// What-is-my-IP requests sent from chosen source IPs, as if a VM (through its host's agent) or an
/// Internet client (straight to the edge) sent them. The lab's VMs run their own processes; these
/// sources are VMs without one (connector and service instances, probe VMs) or platform IPs, so
/// the agent learns this process as their underlay address. Bounded: about 3 s at 2 requests a
/// second per request.
public enum WhoamiProbe {
  /// The source port of a run's first request, unless the caller picks one.
  public static let firstPort: UInt16 = 41_000

  public struct Request: Sendable {
    public var label: String
    public var source: IPv4Address
    /// The host whose agent the source sits behind; nil: on the Internet.
    public var host: String?
    public var server: IPv4Address
    public init(label: String, source: IPv4Address, host: String?, server: IPv4Address) {
      self.label = label
      self.source = source
      self.host = host
      self.server = server
    }
  }

  /// Source IPs the server saw, per request label (labels without an answer map to []).
  /// `backends`: VMs (IP, host) that serve what-is-my-IP themselves for the run, as private
  /// servers inside the VPC; they start first and announce themselves to their agent. Requests
  /// use source ports from `firstPort` up, one each: the same port again is the same connection.
  public static func run(
    _ requests: [Request], state: LabState, seconds: Double = 3, backends: [(ip: IPv4Address, host: String)] = [],
    firstPort: UInt16 = WhoamiProbe.firstPort
  ) async throws -> [String: Set<String>] {
    struct Source {
      var ip: IPv4Address
      var host: String?
      var flows: [(label: String, server: IPv4Address, port: UInt16)] = []
    }
    var sources: [UInt32: Source] = [:]
    var nextPort = firstPort
    for r in requests {
      var s = sources[r.source.value] ?? Source(ip: r.source, host: r.host)
      s.flows.append((r.label, r.server, nextPort))
      nextPort += 1
      sources[r.source.value] = s
    }
    // One data plane per next hop (each agent, and the edge), holding every source behind it.
    var planes: [(stop: @Sendable () -> Void, reports: @Sendable () -> [(IPv4Address, WorkloadReport)])] = []
    defer { for plane in planes { plane.stop() } }
    for backend in backends {
      guard let hop = SocketAddress(state.process("agent/\(backend.host)")?.address ?? "") else {
        throw LabError("no underlay address for \(backend.host)")
      }
      let socket = try UDPSocket(binding: SocketAddress(ip: IPv4Address(127, 0, 0, 1), port: 0))
      let server = PrivateServer(ip: backend.ip, announceTo: PrivateServer.announceAddress)
      let plane = VMDataplane(socket: socket, agent: hop, workloads: [(ip: backend.ip, workload: server)])
      plane.start()
      planes.append((stop: { plane.stop() }, reports: { [] }))
    }
    if !backends.isEmpty { try await Task.sleep(for: .milliseconds(200)) }
    for (host, group) in Dictionary(grouping: sources.values, by: { $0.host ?? "" }) {
      let next = host.isEmpty ? state.edge : (state.process("agent/\(host)")?.address ?? "")
      guard let hop = SocketAddress(next) else { throw LabError("no underlay address for \(host.isEmpty ? "the edge" : host)") }
      let workloads = group.map { s in
        (ip: s.ip, workload: Workload(
          name: "\(s.ip)", ip: s.ip,
          spec: WorkloadSpec(flows: s.flows.map { .whoami(server: $0.server, srcPort: $0.port, ratePerSec: 2) }),
          seed: UInt64(s.ip.value)))
      }
      let socket = try UDPSocket(binding: SocketAddress(ip: IPv4Address(127, 0, 0, 1), port: 0))
      if host.isEmpty {
        let plane = InternetClientDataplane(socket: socket, agent: hop, workloads: workloads)
        plane.start()
        planes.append((stop: { plane.stop() }, reports: { plane.withWorkloads { ws in ws.map { ($0.ip, $0.workload.report(now: DataplaneClock.now())) } } }))
      } else {
        let plane = VMDataplane(socket: socket, agent: hop, workloads: workloads)
        plane.start()
        planes.append((stop: { plane.stop() }, reports: { plane.withWorkloads { ws in ws.map { ($0.ip, $0.workload.report(now: DataplaneClock.now())) } } }))
      }
    }
    try await Task.sleep(for: .seconds(seconds))
    var seen: [String: Set<String>] = [:]
    for r in requests { seen[r.label] = seen[r.label] ?? [] }
    for plane in planes {
      for (ip, report) in plane.reports() {
        guard let source = sources[ip.value] else { continue }
        for (index, flow) in report.flows.enumerated() where index < source.flows.count {
          for mapping in flow.mappings {
            seen[source.flows[index].label, default: []].insert(String(mapping.split(separator: ":").first ?? ""))
          }
        }
      }
    }
    return seen
  }
}

/// A VM that serves what-is-my-IP (UDP 80) at its internal address, for `WhoamiProbe` backends.
/// Its first tick sends one ping to `announceTo`, so its host agent learns where the VM is (an
/// agent learns a VM's underlay address from the VM's own packets).
final class PrivateServer: PacketEndpoint {
  let servers: InternetServers
  let ip: IPv4Address
  let announceTo: IPv4Address
  var announced = false
  /// The lab's what-is-my-IP server: any Internet address would do (the ping is NATed like any
  /// other), but not one inside the VPC, whose ingress rules would count it.
  static let announceAddress = IPv4Address(192, 0, 2, 10)

  init(ip: IPv4Address, announceTo: IPv4Address) {
    self.ip = ip
    self.announceTo = announceTo
    servers = InternetServers(servers: [ServerSpec(ip: ip, services: [.whoami])])
  }

  func receive(_ packet: UnsafeRawBufferPointer, now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    servers.receive(packet, now: now, emit: emit)
  }

  func tick(now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    if !announced {
      announced = true
      PacketBuilder.icmpEcho(source: ip, destination: announceTo, identifier: 1, sequence: 1).withUnsafeBytes { emit($0) }
    }
    servers.tick(now: now, emit: emit)
  }
}
