import HostnatAddressing
import HostnatInternet
import HostnatPackets
import HostnatWorkload
import Testing
import HostnatTestSupport

let ms: UInt64 = 1_000_000
let second: UInt64 = 1_000_000_000
let vmIP = ip("10.0.0.2")
let serverA = ip("203.0.113.10")
let serverB = ip("203.0.113.20")
let serverC = ip("203.0.113.30")

/// A NAT in the test: rewrites the VM's source to 198.51.100.1 with an endpoint-independent
/// mapping (one public port per private protocol+port), and optionally endpoint-dependent filtering.
final class NATShim {
  struct Private: Hashable { var proto: UInt8; var port: UInt16 }
  struct Public: Hashable { var proto: UInt8; var port: UInt16 }
  struct Permission: Hashable { var proto: UInt8; var port: UInt16; var remote: UInt32; var remotePort: UInt16 }
  let publicIP = ip("198.51.100.1")
  let filtering: Bool
  var outboundMap: [Private: UInt16] = [:]
  var inboundMap: [Public: UInt16] = [:]
  var permissions: Set<Permission> = []
  var nextPort: UInt16 = 20_000
  var filtered = 0

  init(filtering: Bool) { self.filtering = filtering }

  /// Translates a VM packet in place; false = drop.
  func outbound(_ packet: inout [UInt8]) -> Bool {
    packet.withUnsafeMutableBytes { buffer in
      guard let view = try? IPv4PacketView(validating: buffer) else { return false }
      let proto = view.protocolNumber
      view.rewriteSource(publicIP)
      switch proto {
      case IPProtocol.udp, IPProtocol.tcp:
        let sport = buffer.loadBE16(at: view.headerLength)
        let dport = buffer.loadBE16(at: view.headerLength + 2)
        let port = map(proto, sport)
        permissions.insert(Permission(proto: proto, port: port, remote: view.destination.value, remotePort: dport))
        buffer.storeBE16(port, at: view.headerLength)
        fixChecksum(view)
      case IPProtocol.icmp:
        guard let icmp = try? ICMPMessageView(validating: view.payload), icmp.type == ICMPType.echoRequest else {
          return false
        }
        let port = map(proto, icmp.identifier)
        permissions.insert(Permission(proto: proto, port: port, remote: view.destination.value, remotePort: 0))
        icmp.identifier = port
        icmp.checksum = icmp.computeChecksum()
      default:
        return false
      }
      return true
    }
  }

  func inbound(_ packet: inout [UInt8]) -> Bool {
    packet.withUnsafeMutableBytes { buffer in
      guard let view = try? IPv4PacketView(validating: buffer), view.destination == publicIP else { return false }
      let proto = view.protocolNumber
      var port: UInt16
      var remotePort: UInt16 = 0
      switch proto {
      case IPProtocol.udp, IPProtocol.tcp:
        port = buffer.loadBE16(at: view.headerLength + 2)
        remotePort = buffer.loadBE16(at: view.headerLength)
      case IPProtocol.icmp:
        guard let icmp = try? ICMPMessageView(validating: view.payload), icmp.type == ICMPType.echoReply else {
          return false
        }
        port = icmp.identifier
      default:
        return false
      }
      guard let privatePort = inboundMap[Public(proto: proto, port: port)] else { return false }
      if filtering,
        !permissions.contains(Permission(proto: proto, port: port, remote: view.source.value, remotePort: remotePort))
      {
        filtered += 1
        return false
      }
      view.rewriteDestination(vmIP)
      if proto == IPProtocol.icmp {
        let icmp = try! ICMPMessageView(validating: view.payload)
        icmp.identifier = privatePort
        icmp.checksum = icmp.computeChecksum()
      } else {
        buffer.storeBE16(privatePort, at: view.headerLength + 2)
        fixChecksum(view)
      }
      return true
    }
  }

  private func map(_ proto: UInt8, _ port: UInt16) -> UInt16 {
    if let existing = outboundMap[Private(proto: proto, port: port)] { return existing }
    let port2 = nextPort
    nextPort += 1
    outboundMap[Private(proto: proto, port: port)] = port2
    inboundMap[Public(proto: proto, port: port2)] = port
    return port2
  }

  private func fixChecksum(_ view: IPv4PacketView) {
    if view.protocolNumber == IPProtocol.udp {
      let udp = try! UDPHeaderView(validating: view.payload)
      udp.checksum = udp.computeChecksum(pseudoHeaderSum: view.pseudoHeaderSum)
    } else {
      let tcp = try! TCPHeaderView(validating: view.payload)
      tcp.checksum = tcp.computeChecksum(pseudoHeaderSum: view.pseudoHeaderSum)
    }
  }
}

/// A VM and the emulated Internet joined by an in-memory link with a manual clock.
final class Lab {
  enum Direction { case up, down }
  let vm: Workload
  let net: InternetServers
  var nat: NATShim?
  var now: UInt64 = 0
  /// Decides per packet whether the link loses it; `n` counts packets in that direction.
  var drop: (Direction, UInt64, Int) -> Bool = { _, _, _ in false }
  var upCount = 0
  var downCount = 0
  var dropped = 0
  var invalid = 0
  private var toNet: [[UInt8]] = []
  private var toVM: [[UInt8]] = []

  init(spec: WorkloadSpec, nat: NATShim? = nil, seed: UInt64 = 7) {
    vm = Workload(name: "vm-1", ip: vmIP, spec: spec, seed: seed)
    net = InternetServers(servers: InternetServers.labDefault)
    self.nat = nat
  }

  private func valid(_ p: [UInt8]) -> Bool {
    if (try? PacketParser.parse(p, verifyChecksums: true)) == nil {
      invalid += 1
      return false
    }
    return true
  }

  func run(until end: UInt64, step: UInt64 = ms) {
    while now < end {
      now += step
      vm.tick(now: now) { toNet.append(Array($0)) }
      net.tick(now: now) { toVM.append(Array($0)) }
      var rounds = 0
      while (!toNet.isEmpty || !toVM.isEmpty) && rounds < 16 {
        rounds += 1
        let up = toNet
        toNet = []
        for var p in up {
          upCount += 1
          guard valid(p) else { continue }
          if drop(.up, now, upCount) {
            dropped += 1
            continue
          }
          if let nat, !nat.outbound(&p) { continue }
          p.withUnsafeBytes { net.receive($0, now: now) { toVM.append(Array($0)) } }
        }
        let down = toVM
        toVM = []
        for var p in down {
          downCount += 1
          guard valid(p) else { continue }
          if drop(.down, now, downCount) {
            dropped += 1
            continue
          }
          if let nat, !nat.inbound(&p) { continue }
          p.withUnsafeBytes { vm.receive($0, now: now) { toNet.append(Array($0)) } }
        }
      }
    }
  }

  /// Stops the workload at `stopAt` and runs until `end` so everything outstanding resolves.
  func finish(stopAt: UInt64, end: UInt64) -> WorkloadReport {
    run(until: stopAt)
    vm.stop(now: now)
    run(until: end)
    return vm.report(now: now)
  }
}

extension WorkloadReport {
  func kind(_ k: FlowSpec.Kind) -> [FlowReport] { flows.filter { $0.kind == k } }
  func one(_ k: FlowSpec.Kind) throws -> FlowReport { try #require(kind(k).first) }
}
