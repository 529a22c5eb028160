import HostnatAddressing
public import HostnatEngine
import HostnatPackets
public import HostnatProto
import SwiftProtobuf

/// Dynamic port allocation on the host side: how many NAT ports each NIC holds and uses, when to
/// ask the controller for another block, and what to report so it can reclaim idle ones.
/// Pure: config and flows in, decisions out.
public struct PortDemand: Sendable {
  /// One NIC of a VM and its NAT ports, as its host sees them.
  public struct Usage: Sendable, Equatable {
    public var vmID: String
    public var instance: String
    public var nic: String
    /// Key of its gateway ("" when the NIC has no NAT).
    public var gateway: String
    /// Whether its gateway allocates ports dynamically.
    public var dynamic: Bool
    public var allocated: Int
    public var inUse: Int
    public var openFlows: Int
    public var maxConnectionsToOneDestination: Int
    public var maxPortsPerVm: Int
    /// NAT IPs of its active blocks.
    public var natIPs: [String]
    /// Open flows by the NAT IP they use (drained IPs included).
    public var flowsByNatIP: [String: Int]
    /// Active blocks no flow uses.
    public var idleBlocks: [Hostnat_V1_PortBlock]
  }

  /// Ask for more once this share of the allocated ports is in use (Cloud NAT doubles a VM's
  /// ports when it runs short; asking early leaves room for the round trip).
  public static let requestThreshold = 0.8

  /// Every NIC of the snapshot, with or without NAT: what the metrics and the status file show.
  public static func all(_ config: Hostnat_V1_HostConfig, flows: [FlowSnapshot]) -> [Usage] {
    var gateways: [String: Hostnat_V1_GatewayConfig] = [:]
    for gateway in config.gateways { gateways[gateway.key] = gateway }
    var portsByVM: [String: Set<UInt64>] = [:]
    var openByVM: [String: Int] = [:]
    var byIP: [String: [String: Int]] = [:]
    var destinations: [String: [UInt64: Int]] = [:]
    for flow in flows {
      guard let vm = flow.vmID else { continue }
      portsByVM[vm, default: []].insert(UInt64(flow.natIP.value) << 16 | UInt64(flow.natPort))
      openByVM[vm, default: 0] += 1
      byIP[vm, default: [:]]["\(flow.natIP)", default: 0] += 1
      let key = UInt64(flow.remoteIP.value) << 24 | UInt64(flow.remotePort) << 8 | UInt64(flow.protocolNumber)
      destinations[vm, default: [:]][key, default: 0] += 1
    }
    var result: [Usage] = []
    for vm in config.vms {
      for nic in vm.nics {
        let binding = nic.natBindings.first
        let gateway = binding.flatMap { gateways[$0.gateway] }
        let id = ConfigTranslation.vmID(vm, nic)
        let used = portsByVM[id] ?? []
        let active = binding?.portBlocks.filter { !$0.drained } ?? []
        let idle = active.filter { block in
          guard let ip = IPv4Address(block.natIp) else { return false }
          return !(0..<block.count).contains { used.contains(UInt64(ip.value) << 16 | UInt64(block.firstPort + $0)) }
        }
        result.append(Usage(
          vmID: id, instance: vm.instance, nic: nic.name, gateway: binding?.gateway ?? "",
          dynamic: gateway?.dynamicPortAllocation ?? false, allocated: active.reduce(0) { $0 + Int($1.count) },
          inUse: used.count, openFlows: openByVM[id] ?? 0, maxConnectionsToOneDestination: destinations[id]?.values.max() ?? 0,
          maxPortsPerVm: Int(gateway?.maxPortsPerVm ?? 0), natIPs: Set(active.map(\.natIp)).sorted(),
          flowsByNatIP: byIP[id] ?? [:], idleBlocks: idle))
      }
    }
    return result
  }

  /// The NICs under a gateway with dynamic port allocation: the ones that ask and report.
  public static func usage(_ config: Hostnat_V1_HostConfig, flows: [FlowSnapshot]) -> [Usage] {
    all(config, flows: flows).filter(\.dynamic)
  }

  /// Whether a NIC should ask for another block now: it is near full, or it just failed to
  /// allocate, and it is below the gateway's maximum.
  public static func needsMore(_ usage: Usage, allocationFailuresGrew: Bool) -> Bool {
    guard usage.maxPortsPerVm == 0 || usage.allocated < usage.maxPortsPerVm else { return false }
    return allocationFailuresGrew || Double(usage.inUse) >= Double(usage.allocated) * requestThreshold
  }

  /// The report the controller reclaims from.
  public static func report(_ usages: [Usage], appliedVersion: UInt64) -> Hostnat_V1_PortUsageReport {
    .with {
      $0.appliedVersion = appliedVersion
      $0.nics = usages.map { u in
        .with {
          $0.instance = u.instance
          $0.nic = u.nic
          $0.portsAllocated = UInt32(u.allocated)
          $0.portsInUse = UInt32(u.inUse)
          $0.maxConnectionsToOneDestination = UInt32(u.maxConnectionsToOneDestination)
          $0.idleBlocks = u.idleBlocks
        }
      }
    }
  }
}
