import HostnatAddressing
import HostnatPlanner

/// Result of `hostnat bench planner`. `vms`, `full_ms` and `incremental_us` are the issue's
/// contract; the rest is detail.
public struct PlannerBenchResult: Codable, Sendable {
  public var vms: Int
  /// Best of several full allocations from scratch (validation included) for `vms` VMs.
  public var fullMs: Double
  /// Mean of `addUs` and `removeUs`.
  public var incrementalUs: Double
  public var addUs: Double
  public var removeUs: Double
  public var natIps: Int
  /// VMs that got ports in the full allocation (must equal `vms`).
  public var vmsWithPorts: Int

  enum CodingKeys: String, CodingKey {
    case vms
    case fullMs = "full_ms"
    case incrementalUs = "incremental_us"
    case addUs = "add_us"
    case removeUs = "remove_us"
    case natIps = "nat_ips"
    case vmsWithPorts = "vms_with_ports"
  }
}

/// In-memory benchmark of the NAT planner.
public enum PlannerBenchmark {
  /// Plans `vms` single-NIC VMs from scratch on a manual pool with just enough NAT IPs at the
  /// default 64 ports per VM (1,008 VMs per IP) plus one spare, then times single-VM adds and
  /// removes on the full planner. Quarantined blocks are released between batches (untimed), as
  /// the controller would once hosts acknowledge.
  public static func run(vms requested: Int = 100_000) -> PlannerBenchResult {
    let vms = max(requested, 1)
    let natIpCount = (vms + 1007) / 1008 + 1
    func address(_ n: Int) -> String { "\(10 + n >> 24 & 0x7F).\(n >> 16 & 0xFF).\(n >> 8 & 0xFF).\(n & 0xFF)" }
    func instance(_ i: Int) -> Instance {
      Instance(name: "vm-\(i)", host: "host-\(i / 64)", networkInterfaces: [NetworkInterface(subnetwork: "subnet-1", networkIP: address(i + 2))])
    }
    let natIps = (0..<natIpCount).map { "198.\(18 + $0 >> 16).\($0 >> 8 & 0xFF).\($0 & 0xFF)" }
    let intent = NATIntent(
      networks: [Network(name: "net-1")],
      subnetworks: [Subnetwork(name: "subnet-1", network: "net-1", region: "region-1", ipCidrRange: "10.0.0.0/8")],
      routers: [Router(name: "router-1", network: "net-1", region: "region-1")],
      natGateways: [NATGateway(name: "nat-1", router: "router-1", natIpAllocateOption: .manualOnly, natIps: natIps)],
      instances: (0..<vms).map(instance))

    let clock = ContinuousClock()
    var best = Duration.seconds(3600)
    var planner = NATPlanner()
    for _ in 0..<3 {
      let t0 = clock.now
      let built = try? NATPlanner(intent: intent)
      let elapsed = clock.now - t0
      best = min(best, elapsed)
      if let built { planner = built }
    }
    let status = planner.status(gateway: "nat-1")
    let withPorts = status?.numVmEndpointsWithNatMappings ?? 0

    // Single-VM changes on the full planner: batches of adds, then the same VMs removed.
    let batch = 500
    let rounds = 8
    let extras = (0..<batch).map { instance(vms + 16 + $0) }
    var addTime = Duration.zero
    var removeTime = Duration.zero
    for _ in 0..<rounds {
      var t0 = clock.now
      for vm in extras { _ = try? planner.upsertInstance(vm) }
      addTime += clock.now - t0
      t0 = clock.now
      for vm in extras { _ = try? planner.removeInstance(vm.name) }
      removeTime += clock.now - t0
      planner.releaseQuarantined(planner.quarantinedBlocks.map(\.id))
    }
    func microseconds(_ d: Duration, _ n: Int) -> Double {
      (Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12) / Double(n)
    }
    let addUs = microseconds(addTime, batch * rounds)
    let removeUs = microseconds(removeTime, batch * rounds)
    return PlannerBenchResult(
      vms: vms, fullMs: microseconds(best, 1) / 1000, incrementalUs: (addUs + removeUs) / 2, addUs: addUs, removeUs: removeUs,
      natIps: natIpCount, vmsWithPorts: withPorts)
  }
}
