import HostnatAddressing
import HostnatEngine
import HostnatPackets

#if canImport(CHostnatBaseline)
  import CHostnatBaseline
#endif

/// Result of `hostnat bench engine`. The first five keys are the contract.
public struct EngineBenchResult: Codable, Sendable {
  public var flows: Int
  /// Established-flow translation rate (both directions), million packets per second, one core.
  public var translateMpps: Double
  public var nsPerPacket: Double
  /// Rate of first packets (flow + mapping creation, port choice), per second.
  public var newFlowsPerSecond: Double
  /// Flow region bytes divided by flows (the region is sized for exactly `flows`).
  public var bytesPerFlow: Double
  public var vms: Int
  /// Egress firewall rules every first packet is checked against (none of them matches).
  public var firewallRules: Int
  public var packetsTimed: Int
  /// Same workload in a plain C loop (open addressing + rewrite + RFC 1624), when built in.
  public var baselineCMpps: Double?

  enum CodingKeys: String, CodingKey {
    case flows
    case translateMpps = "translate_mpps"
    case nsPerPacket = "ns_per_packet"
    case newFlowsPerSecond = "new_flows_per_s"
    case bytesPerFlow = "bytes_per_flow"
    case vms
    case firewallRules = "firewall_rules"
    case packetsTimed = "packets_timed"
    case baselineCMpps = "baseline_c_mpps"
  }
}

/// In-memory benchmark of the translation engine.
public enum EngineBenchmark {
  static let slot = 64

  /// Builds `flows` random TCP/UDP flows from 256 VMs (512-port blocks, 126 VMs per NAT IP) to
  /// 4096 destinations, then times (1) the first packet of every flow on an empty table and
  /// (2) established traffic, alternating inbound and outbound on every flow. Packet buffers are
  /// built beforehand and reused; nothing is allocated in the timed loops.
  ///
  /// With `firewallRules` > 0 every VM is in one network whose egress rules each first packet
  /// scans in full (none matches): half carry a target tag that half the VMs have, so the cost of
  /// rules, and of skipping rules by tag, shows in `new_flows_per_s`.
  public static func run(flows requested: Int = 65_536, firewallRules: Int = 0) throws -> EngineBenchResult {
    let flows = max(requested, 256)
    let vmCount = 256
    let portsPerVM = max(512, (flows / vmCount) * 2 + 64)
    let perIP = 64_512 / portsPerVM
    var vms: [VMConfig] = []
    for i in 0..<vmCount {
      let address = IPv4Address(10, 0, UInt8(i), 2)
      let natIP = IPv4Address(192, 0, 2, UInt8(10 + i / perIP))
      let start = 1024 + (i % perIP) * portsPerVM
      vms.append(
        VMConfig(
          id: "vm-\(i)", primaryIP: address, natSourceRanges: [IPv4CIDR(address, prefixLength: 32)!],
          portBlocks: [PortBlock(natIP: natIP, ports: start..<(start + portsPerVM))],
          network: firewallRules > 0 ? "net" : "", tags: i % 2 == 0 ? ["even"] : []))
    }
    // Rules that never match the workload (it sends to 203.0.x.x on 443 and 53).
    let rules = (0..<firewallRules).map { r in
      FirewallRule(
        name: "r\(r)", direction: .egress, priority: r, allow: false,
        matches: [FirewallMatch(protocolNumber: IPProtocol.tcp, ports: [UInt16(1 + r % 1000)...UInt16(1 + r % 1000)])],
        ranges: [IPv4CIDR(IPv4Address(198, 51, 100, 0), prefixLength: 24)!], targetTags: r % 2 == 0 ? ["even"] : [])
    }
    let config = EngineConfig(vms: vms, networks: firewallRules > 0 ? ["net": NetworkPolicy(firewallRules: rules)] : [:])

    // Templates: flow i comes from VM i % 256 with a distinct source port.
    var rng = SplitMix64(seed: 42)
    let templates = UnsafeMutableRawBufferPointer.allocate(byteCount: flows * slot, alignment: 64)
    let work = UnsafeMutableRawBufferPointer.allocate(byteCount: flows * slot, alignment: 64)
    defer {
      templates.deallocate()
      work.deallocate()
    }
    var lengths = [Int](repeating: 0, count: flows)
    let payload = [UInt8](repeating: 0xAB, count: 16)
    for i in 0..<flows {
      let vm = i % vmCount
      let src = IPv4Address(10, 0, UInt8(vm), 2)
      let sport = UInt16(10_000 + i / vmCount)
      let dst = IPv4Address(UInt32(0xCB00_0000) | UInt32(rng.next() % 4096))
      let packet: [UInt8] =
        rng.next() % 10 < 7
        ? PacketBuilder.tcp(
          source: src, destination: dst, sourcePort: sport, destinationPort: 443, flags: .ack, sequence: UInt32(i),
          payload: payload)
        : PacketBuilder.udp(source: src, destination: dst, sourcePort: sport, destinationPort: 53, payload: payload)
      lengths[i] = packet.count
      packet.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: templates[(i * slot)...]).copyMemory(from: $0) }
    }
    let region = UnsafeMutableRawBufferPointer.allocate(byteCount: NATEngine.regionSize(capacity: flows), alignment: 64)
    defer { region.deallocate() }
    let clock = ContinuousClock()

    // (1) New flows: fresh table each round, best of 3.
    var bestNew = Duration.seconds(1_000)
    var engine: NATEngine! = nil
    for _ in 0..<3 {
      engine = try NATEngine(formatting: region, capacity: flows, config: config, seed: 7)
      work.copyMemory(from: UnsafeRawBufferPointer(templates))
      var forwarded = 0
      let t0 = clock.now
      lengths.withUnsafeBufferPointer { lens in
        for i in 0..<flows {
          let p = UnsafeMutableRawBufferPointer(start: work.baseAddress! + i * slot, count: lens[i])
          if engine.translateOutbound(p, now: 1_000_000_000) == .forward { forwarded &+= 1 }
        }
      }
      let elapsed = clock.now - t0
      precondition(forwarded == flows, "benchmark workload dropped \(flows - forwarded) first packets")
      bestNew = min(bestNew, elapsed)
    }

    // (2) Established: every packet is now NAT → remote; turn it into the reply, translate it in,
    // turn it back into the VM's next packet and translate it out. The swaps keep checksums valid.
    for i in 0..<flows { swapEndpoints(work.baseAddress! + i * slot) }
    let rounds = max(1, 8_000_000 / (2 * flows))
    var now: UInt64 = 2_000_000_000
    var bestEstablished = Duration.seconds(1_000)
    for _ in 0..<3 {
      var forwarded = 0
      let t0 = clock.now
      lengths.withUnsafeBufferPointer { lens in
        for _ in 0..<rounds {
          now &+= 1_000
          for i in 0..<flows {
            let base = work.baseAddress! + i * slot
            let p = UnsafeMutableRawBufferPointer(start: base, count: lens[i])
            if engine.translateInbound(p, now: now) == .forward { forwarded &+= 1 }
            swapEndpoints(base)
            if engine.translateOutbound(p, now: now) == .forward { forwarded &+= 1 }
            swapEndpoints(base)
          }
        }
      }
      let elapsed = clock.now - t0
      precondition(forwarded == 2 * rounds * flows, "benchmark workload dropped established packets")
      bestEstablished = min(bestEstablished, elapsed)
    }
    let packets = 2 * rounds * flows
    let seconds = Double(bestEstablished.components.seconds) + Double(bestEstablished.components.attoseconds) * 1e-18
    let newSeconds = Double(bestNew.components.seconds) + Double(bestNew.components.attoseconds) * 1e-18
    return EngineBenchResult(
      flows: flows, translateMpps: Double(packets) / seconds / 1e6, nsPerPacket: seconds * 1e9 / Double(packets),
      newFlowsPerSecond: Double(flows) / newSeconds, bytesPerFlow: Double(engine.regionBytes) / Double(flows),
      vms: vmCount, firewallRules: firewallRules, packetsTimed: packets, baselineCMpps: BaselineC.run(templates: templates, lengths: lengths, flows: flows))
  }

  /// Swaps source/destination addresses and ports (sum-neutral, so checksums stay valid).
  @inline(__always)
  static func swapEndpoints(_ p: UnsafeMutableRawPointer) {
    let a = p.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
    let b = p.loadUnaligned(fromByteOffset: 16, as: UInt32.self)
    p.storeBytes(of: b, toByteOffset: 12, as: UInt32.self)
    p.storeBytes(of: a, toByteOffset: 16, as: UInt32.self)
    let s = p.loadUnaligned(fromByteOffset: 20, as: UInt16.self)
    let d = p.loadUnaligned(fromByteOffset: 22, as: UInt16.self)
    p.storeBytes(of: d, toByteOffset: 20, as: UInt16.self)
    p.storeBytes(of: s, toByteOffset: 22, as: UInt16.self)
  }
}

enum BaselineC {
  /// Runs the C reference on a copy of the templates (same flows, same loop); nil when the C target
  /// is not linked in.
  static func run(templates: UnsafeMutableRawBufferPointer, lengths: [Int], flows: Int) -> Double? {
    #if canImport(CHostnatBaseline)
      let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: templates.count, alignment: 64)
      defer { copy.deallocate() }
      copy.copyMemory(from: UnsafeRawBufferPointer(templates))
      let rounds = max(1, 8_000_000 / (2 * flows))
      var best = 0.0
      for _ in 0..<3 {
        copy.copyMemory(from: UnsafeRawBufferPointer(templates))
        let pps = lengths.withUnsafeBufferPointer {
          hostnat_baseline_run(
            copy.baseAddress!.assumingMemoryBound(to: UInt8.self), EngineBenchmark.slot, $0.baseAddress!, flows, rounds)
        }
        best = max(best, pps)
      }
      return best > 0 ? best / 1e6 : nil
    #else
      return nil
    #endif
  }
}
