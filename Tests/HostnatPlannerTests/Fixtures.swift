import HostnatAddressing
@testable import HostnatPlanner

/// Small intents for tests: one network "net", region "r1", subnet "s1" 10.0.0.0/16 with a
/// secondary range "pods" 10.100.0.0/16, router "rt", and whatever gateways and VMs a test adds.
enum Fixture {
  static func intent(
    gateways: [NATGateway] = [], instances: [Instance] = [], autoPool: [String] = [],
    extraSubnets: [Subnetwork] = []
  ) -> NATIntent {
    NATIntent(
      networks: [Network(name: "net"), Network(name: "net2")],
      subnetworks: [
        Subnetwork(
          name: "s1", network: "net", region: "r1", ipCidrRange: "10.0.0.0/16",
          secondaryIpRanges: [.init(rangeName: "pods", ipCidrRange: "10.100.0.0/16"), .init(rangeName: "svc", ipCidrRange: "10.101.0.0/16")]),
        Subnetwork(name: "s2", network: "net", region: "r1", ipCidrRange: "10.1.0.0/16"),
        Subnetwork(name: "t1", network: "net2", region: "r1", ipCidrRange: "10.0.0.0/16"),
      ] + extraSubnets,
      routers: [Router(name: "rt", network: "net", region: "r1"), Router(name: "rt2", network: "net2", region: "r1")],
      natGateways: gateways,
      autoNatIpPools: autoPool.isEmpty ? [] : [AutoNATIPPool(region: "r1", natIps: autoPool)],
      instances: instances)
  }

  /// Manual gateway over the whole network.
  static func manual(_ ips: [String], name: String = "gw", minPorts: Int? = nil, drain: [String] = [], rules: [NATRule] = []) -> NATGateway {
    NATGateway(name: name, router: "rt", natIpAllocateOption: .manualOnly, natIps: ips, drainNatIps: drain, minPortsPerVm: minPorts, rules: rules)
  }

  /// A NAT rule matching one destination range per rule number (198.51.<n % 256>.0/24).
  static func rule(_ number: Int, _ ips: [String], drain: [String] = []) -> NATRule {
    NATRule(ruleNumber: number, match: "inIpRange(destination.ip, \"198.51.\(number % 256).0/24\")", sourceNatActiveIps: ips, sourceNatDrainIps: drain)
  }

  static func dynamic(_ ips: [String], name: String = "gw", min: Int = 32, max: Int = 256) -> NATGateway {
    NATGateway(
      name: name, router: "rt", natIpAllocateOption: .manualOnly, natIps: ips, minPortsPerVm: min, maxPortsPerVm: max,
      enableDynamicPortAllocation: true)
  }

  /// "203.0.113.<n>"
  static func ip(_ n: Int) -> String { "203.0.113.\(n)" }
  static func ips(_ range: Range<Int>) -> [String] { range.map(ip) }

  /// VM `vm<i>` on host `h<i % 8>` in s1 with primary IP 10.0.<i / 250>.<i % 250 + 2>.
  static func vm(_ i: Int, aliases: [AliasIPRange] = [], externalIP: String? = nil, subnet: String = "s1", host: String? = nil) -> Instance {
    let base = subnet == "s2" ? "10.1" : "10.0"
    return Instance(
      name: "vm\(i)", host: host ?? "h\(i % 8)",
      networkInterfaces: [NetworkInterface(subnetwork: subnet, networkIP: "\(base).\(i / 250).\(i % 250 + 2)", aliasIpRanges: aliases, externalIP: externalIP)])
  }

  static func vms(_ range: Range<Int>) -> [Instance] { range.map { vm($0) } }
}


extension NATPlanner {
  /// Pairs of owned ranges (held on default or rule NAT IPs, active or drained, and
  /// quarantined) that share a NAT IP:port.
  var overlaps: [String] { overlaps(in: allAllocations) }

  /// `overlaps`, for `allocations` the caller already has (the property tests call this after
  /// every step: owners are only named when there is a problem).
  func overlaps(in allocations: [NICNATAllocation]) -> [String] {
    // Owner: allocation index and rule number (-1: default NAT IPs), or -1 and a quarantine index.
    var owned: [(range: NATPortRange, owner: Int, detail: Int)] = []
    for (i, allocation) in allocations.enumerated() {
      for range in allocation.natIpPortRanges { owned.append((range, i, -1)) }
      for range in allocation.drainNatIpPortRanges { owned.append((range, i, -1)) }
      for rule in allocation.ruleAllocations {
        for range in rule.natIpPortRanges { owned.append((range, i, rule.ruleNumber)) }
        for range in rule.drainNatIpPortRanges { owned.append((range, i, rule.ruleNumber)) }
      }
    }
    let quarantine = quarantinedBlocks
    for (q, block) in quarantine.enumerated() { owned.append((block.range, -1, q)) }
    func name(_ entry: (range: NATPortRange, owner: Int, detail: Int)) -> String {
      if entry.owner < 0 { return "quarantine#\(quarantine[entry.detail].id) of \(quarantine[entry.detail].nic)" }
      let nic = allocations[entry.owner].nic
      return entry.detail < 0 ? "\(nic)" : "\(nic) rule \(entry.detail)"
    }
    owned.sort { $0.range < $1.range }
    var problems: [String] = []
    for (a, b) in zip(owned, owned.dropFirst()) where a.range.natIp == b.range.natIp && b.range.firstPort <= a.range.lastPort {
      problems.append("\(a.range) (\(name(a))) overlaps \(b.range) (\(name(b)))")
    }
    return problems
  }

  /// Active and drain ranges per instance, for before/after comparisons.
  var rangesByInstance: [String: [String]] {
    var result: [String: [String]] = [:]
    for allocation in allAllocations {
      result[allocation.nic.instance, default: []] += allocation.natIpPortRanges.map { "\(allocation.nic.gateway) \($0)" }
        + allocation.drainNatIpPortRanges.map { "\(allocation.nic.gateway) drain \($0)" }
        + allocation.ruleAllocations.flatMap { rule in
          rule.natIpPortRanges.map { "\(allocation.nic.gateway) rule \(rule.ruleNumber) \($0)" }
            + rule.drainNatIpPortRanges.map { "\(allocation.nic.gateway) rule \(rule.ruleNumber) drain \($0)" }
        }
    }
    return result
  }

  func ports(_ instance: String, gateway: String = "gw") -> [String] {
    allocation(NICRef(instance: instance, gateway: gateway))?.natIpPortRanges.map(\.description) ?? []
  }

  /// The NIC's allocation on one NAT rule of the gateway.
  func rule(_ number: Int, of instance: String, gateway: String = "gw") -> RuleAllocation? {
    allocation(NICRef(instance: instance, gateway: gateway))?.ruleAllocations.first { $0.ruleNumber == number }
  }

  func rulePorts(_ number: Int, of instance: String, gateway: String = "gw") -> [String] {
    rule(number, of: instance, gateway: gateway)?.natIpPortRanges.map(\.description) ?? []
  }
}
