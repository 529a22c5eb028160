import HostnatAddressing
import Testing

@testable import HostnatPlanner

/// One invalid intent and the field its error must name.
struct InvalidIntent: Sendable, CustomTestStringConvertible {
  var name: String
  var field: String
  var reasonContains: String
  var build: @Sendable () -> NATIntent
  var testDescription: String { name }

  init(_ name: String, field: String, reason: String, _ build: @escaping @Sendable () -> NATIntent) {
    self.name = name
    self.field = field
    self.reasonContains = reason
    self.build = build
  }

  /// A valid base intent with one change.
  static func with(
    gateways: [NATGateway] = [Fixture.manual(["203.0.113.1"])], instances: [Instance] = [Fixture.vm(1)], autoPool: [String] = [],
    _ change: @escaping @Sendable (inout NATIntent) -> Void = { _ in }
  ) -> @Sendable () -> NATIntent {
    {
      var intent = Fixture.intent(gateways: gateways, instances: instances, autoPool: autoPool)
      change(&intent)
      return intent
    }
  }
}

@Suite struct ValidationTests {
  static let cases: [InvalidIntent] = [
    // Topology.
    .init("duplicate network", field: "networks[2].name", reason: "duplicate", InvalidIntent.with { $0.networks.append(Network(name: "net")) }),
    .init("empty network name", field: "networks[2].name", reason: "empty", InvalidIntent.with { $0.networks.append(Network(name: "")) }),
    .init(
      "subnet in unknown network", field: "subnetworks[x].network", reason: "unknown network",
      InvalidIntent.with { $0.subnetworks.append(Subnetwork(name: "x", network: "nope", region: "r1", ipCidrRange: "10.9.0.0/16")) }),
    .init(
      "malformed subnet range", field: "subnetworks[x].ipCidrRange", reason: "not an IPv4 range",
      InvalidIntent.with { $0.subnetworks.append(Subnetwork(name: "x", network: "net", region: "r1", ipCidrRange: "10.9.0.1/16")) }),
    .init(
      "prefix too long", field: "subnetworks[x].ipCidrRange", reason: "not an IPv4 range",
      InvalidIntent.with { $0.subnetworks.append(Subnetwork(name: "x", network: "net", region: "r1", ipCidrRange: "10.9.0.0/33")) }),
    .init(
      "overlapping subnets", field: "subnetworks[x].ipCidrRange", reason: "overlaps 10.0.0.0/16 (subnetworks[s1].ipCidrRange)",
      InvalidIntent.with { $0.subnetworks.append(Subnetwork(name: "x", network: "net", region: "r1", ipCidrRange: "10.0.0.0/8")) }),
    .init(
      "secondary overlapping a primary", field: "subnetworks[x].secondaryIpRanges[0].ipCidrRange", reason: "overlaps",
      InvalidIntent.with {
        $0.subnetworks.append(
          Subnetwork(name: "x", network: "net", region: "r1", ipCidrRange: "10.9.0.0/16", secondaryIpRanges: [.init(rangeName: "a", ipCidrRange: "10.1.2.0/24")]))
      }),
    .init(
      "duplicate secondary range name", field: "subnetworks[x].secondaryIpRanges[1].rangeName", reason: "duplicate",
      InvalidIntent.with {
        $0.subnetworks.append(
          Subnetwork(
            name: "x", network: "net", region: "r1", ipCidrRange: "10.9.0.0/16",
            secondaryIpRanges: [.init(rangeName: "a", ipCidrRange: "10.10.0.0/16"), .init(rangeName: "a", ipCidrRange: "10.11.0.0/16")]))
      }),
    .init(
      "duplicate subnet", field: "subnetworks[3].name", reason: "duplicate",
      InvalidIntent.with { $0.subnetworks.append(Subnetwork(name: "s1", network: "net", region: "r1", ipCidrRange: "10.9.0.0/16")) }),
    .init(
      "router in unknown network", field: "routers[x].network", reason: "unknown network",
      InvalidIntent.with { $0.routers.append(Router(name: "x", network: "nope", region: "r1")) }),
    .init("duplicate router", field: "routers[2].name", reason: "duplicate", InvalidIntent.with { $0.routers.append(Router(name: "rt", network: "net", region: "r1")) }),

    // Gateways: ranges.
    .init(
      "gateway on unknown router", field: "natGateways[gw].router", reason: "unknown router",
      InvalidIntent.with(gateways: [NATGateway(name: "gw", router: "nope", natIpAllocateOption: .manualOnly, natIps: ["203.0.113.1"])])),
    .init(
      "duplicate gateway", field: "natGateways[1].name", reason: "duplicate",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1"]), Fixture.manual(["203.0.113.2"])])),
    .init(
      "a range in two gateways", field: "natGateways[gw2].subnetworks[s1]", reason: "already translated by gateway 'gw'",
      InvalidIntent.with(gateways: [
        NATGateway(
          name: "gw", router: "rt", sourceSubnetworkIpRangesToNat: .allSubnetworksAllPrimaryIpRanges, natIpAllocateOption: .manualOnly,
          natIps: ["203.0.113.1"]),
        NATGateway(
          name: "gw2", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks, subnetworks: [.init(name: "s1")],
          natIpAllocateOption: .manualOnly, natIps: ["203.0.113.2"]),
      ])),
    .init(
      "a secondary range in two gateways", field: "natGateways[gw2].subnetworks[s1].secondaryIpRangeNames[0]", reason: "already translated",
      InvalidIntent.with(gateways: [
        NATGateway(
          name: "gw", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks,
          subnetworks: [.init(name: "s1", sourceIpRangesToNat: [.listOfSecondaryIpRanges], secondaryIpRangeNames: ["pods"])],
          natIpAllocateOption: .manualOnly, natIps: ["203.0.113.1"]),
        NATGateway(
          name: "gw2", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks,
          subnetworks: [.init(name: "s1", sourceIpRangesToNat: [.primaryIpRange, .listOfSecondaryIpRanges], secondaryIpRangeNames: ["pods"])],
          natIpAllocateOption: .manualOnly, natIps: ["203.0.113.2"]),
      ])),
    .init(
      "second gateway beside ALL_SUBNETWORKS_ALL_IP_RANGES", field: "natGateways[gw2].router", reason: "already translates every range",
      InvalidIntent.with(gateways: [
        Fixture.manual(["203.0.113.1"]),
        NATGateway(
          name: "gw2", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks,
          subnetworks: [.init(name: "s2", sourceIpRangesToNat: [.primaryIpRange])], natIpAllocateOption: .manualOnly, natIps: ["203.0.113.2"]),
      ])),
    .init(
      "ALL_SUBNETWORKS_ALL_IP_RANGES beside another gateway", field: "natGateways[gw2].sourceSubnetworkIpRangesToNat", reason: "must be the only gateway",
      InvalidIntent.with(gateways: [
        NATGateway(
          name: "gw", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks,
          subnetworks: [.init(name: "s2", sourceIpRangesToNat: [.primaryIpRange])], natIpAllocateOption: .manualOnly, natIps: ["203.0.113.1"]),
        NATGateway(name: "gw2", router: "rt", natIpAllocateOption: .manualOnly, natIps: ["203.0.113.2"]),
      ])),
    .init(
      "listed subnet in another region", field: "natGateways[gw].subnetworks[x]", reason: "not in network",
      InvalidIntent.with(gateways: [
        NATGateway(
          name: "gw", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks, subnetworks: [.init(name: "x")],
          natIpAllocateOption: .manualOnly, natIps: ["203.0.113.1"])
      ]) { $0.subnetworks.append(Subnetwork(name: "x", network: "net", region: "r2", ipCidrRange: "10.9.0.0/16")) }),
    .init(
      "unknown secondary range", field: "natGateways[gw].subnetworks[s1].secondaryIpRangeNames[0]", reason: "no secondary range 'nope'",
      InvalidIntent.with(gateways: [
        NATGateway(
          name: "gw", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks,
          subnetworks: [.init(name: "s1", sourceIpRangesToNat: [.listOfSecondaryIpRanges], secondaryIpRangeNames: ["nope"])],
          natIpAllocateOption: .manualOnly, natIps: ["203.0.113.1"])
      ])),
    .init(
      "secondary names without LIST_OF_SECONDARY_IP_RANGES", field: "natGateways[gw].subnetworks[s1].secondaryIpRangeNames", reason: "only allowed",
      InvalidIntent.with(gateways: [
        NATGateway(
          name: "gw", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks,
          subnetworks: [.init(name: "s1", sourceIpRangesToNat: [.primaryIpRange], secondaryIpRangeNames: ["pods"])],
          natIpAllocateOption: .manualOnly, natIps: ["203.0.113.1"])
      ])),
    .init(
      "ALL_IP_RANGES combined", field: "natGateways[gw].subnetworks[s1].sourceIpRangesToNat", reason: "cannot be combined",
      InvalidIntent.with(gateways: [
        NATGateway(
          name: "gw", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks,
          subnetworks: [.init(name: "s1", sourceIpRangesToNat: [.allIpRanges, .primaryIpRange])], natIpAllocateOption: .manualOnly,
          natIps: ["203.0.113.1"])
      ])),
    .init(
      "empty subnet list", field: "natGateways[gw].subnetworks", reason: "at least one",
      InvalidIntent.with(gateways: [
        NATGateway(name: "gw", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks, natIpAllocateOption: .manualOnly, natIps: ["203.0.113.1"])
      ])),

    // Gateways: ports and timeouts.
    .init(
      "min ports below 2", field: "natGateways[gw].minPortsPerVm", reason: "between 2 and 57344",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1"], minPorts: 1)])),
    .init(
      "min ports above 57344", field: "natGateways[gw].minPortsPerVm", reason: "between 2 and 57344",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1"], minPorts: 57345)])),
    .init(
      "max ports without dynamic allocation", field: "natGateways[gw].maxPortsPerVm", reason: "only allowed with enableDynamicPortAllocation",
      InvalidIntent.with(gateways: [NATGateway(name: "gw", router: "rt", natIpAllocateOption: .manualOnly, natIps: ["203.0.113.1"], maxPortsPerVm: 128)])),
    .init(
      "dynamic min not a power of two", field: "natGateways[gw].minPortsPerVm", reason: "power of two",
      InvalidIntent.with(gateways: [Fixture.dynamic(["203.0.113.1"], min: 48)])),
    .init(
      "dynamic min below 32", field: "natGateways[gw].minPortsPerVm", reason: "between 32 and 32768",
      InvalidIntent.with(gateways: [Fixture.dynamic(["203.0.113.1"], min: 16)])),
    .init(
      "dynamic max not a power of two", field: "natGateways[gw].maxPortsPerVm", reason: "power of two",
      InvalidIntent.with(gateways: [Fixture.dynamic(["203.0.113.1"], max: 1000)])),
    .init(
      "dynamic max above 65536", field: "natGateways[gw].maxPortsPerVm", reason: "between 64 and 65536",
      InvalidIntent.with(gateways: [Fixture.dynamic(["203.0.113.1"], max: 131072)])),
    .init(
      "dynamic max not above min", field: "natGateways[gw].maxPortsPerVm", reason: "greater than minPortsPerVm",
      InvalidIntent.with(gateways: [Fixture.dynamic(["203.0.113.1"], min: 256, max: 256)])),
    .init(
      "dynamic allocation with endpoint-independent mapping", field: "natGateways[gw].enableEndpointIndependentMapping", reason: "cannot be enabled",
      InvalidIntent.with(gateways: [
        NATGateway(
          name: "gw", router: "rt", natIpAllocateOption: .manualOnly, natIps: ["203.0.113.1"], enableDynamicPortAllocation: true,
          enableEndpointIndependentMapping: true)
      ])),
    .init(
      "zero timeout", field: "natGateways[gw].udpIdleTimeoutSec", reason: "between 1 and 604800",
      InvalidIntent.with(gateways: [NATGateway(name: "gw", router: "rt", natIpAllocateOption: .manualOnly, natIps: ["203.0.113.1"], udpIdleTimeoutSec: 0)])),
    .init(
      "timeout over 7 days", field: "natGateways[gw].tcpTimeWaitTimeoutSec", reason: "between 1 and 604800",
      InvalidIntent.with(gateways: [
        NATGateway(name: "gw", router: "rt", natIpAllocateOption: .manualOnly, natIps: ["203.0.113.1"], tcpTimeWaitTimeoutSec: 604801)
      ])),
    .init(
      "negative established timeout", field: "natGateways[gw].tcpEstablishedIdleTimeoutSec", reason: "between 1",
      InvalidIntent.with(gateways: [
        NATGateway(name: "gw", router: "rt", natIpAllocateOption: .manualOnly, natIps: ["203.0.113.1"], tcpEstablishedIdleTimeoutSec: -5)
      ])),

    // Gateways: NAT IPs.
    .init(
      "malformed NAT IP", field: "natGateways[gw].natIps[0]", reason: "not an IPv4 address",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.300"])])),
    .init(
      "NAT IP listed twice", field: "natGateways[gw].natIps[1]", reason: "more than once",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1", "203.0.113.1"])])),
    .init(
      "NAT IP in two gateways", field: "natGateways[gw2].natIps[0]", reason: "already a NAT IP of gateway 'gw'",
      InvalidIntent.with(gateways: [
        NATGateway(
          name: "gw", router: "rt", sourceSubnetworkIpRangesToNat: .allSubnetworksAllPrimaryIpRanges, natIpAllocateOption: .manualOnly,
          natIps: ["203.0.113.1"]),
        NATGateway(
          name: "gw2", router: "rt", sourceSubnetworkIpRangesToNat: .listOfSubnetworks,
          subnetworks: [.init(name: "s1", sourceIpRangesToNat: [.listOfSecondaryIpRanges], secondaryIpRangeNames: ["pods"])],
          natIpAllocateOption: .manualOnly, natIps: ["203.0.113.1"]),
      ])),
    .init(
      "manual NAT IP from the auto pool", field: "natGateways[gw].natIps[0]", reason: "auto-allocation pool",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1"])], autoPool: ["203.0.113.1"])),
    .init(
      "NAT IPs with AUTO_ONLY", field: "natGateways[gw].natIps", reason: "MANUAL_ONLY",
      InvalidIntent.with(gateways: [NATGateway(name: "gw", router: "rt", natIps: ["203.0.113.1"])])),
    .init(
      "draining with AUTO_ONLY", field: "natGateways[gw].drainNatIps", reason: "only manually allocated",
      InvalidIntent.with(gateways: [NATGateway(name: "gw", router: "rt", drainNatIps: ["203.0.113.1"])])),
    .init(
      "draining an IP that never was in the pool", field: "natGateways[gw].drainNatIps[0]", reason: "only existing",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1"], drain: ["203.0.113.9"])])),
    .init(
      "IP both active and drained", field: "natGateways[gw].drainNatIps[0]", reason: "more than once",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1"], drain: ["203.0.113.1"])])),
    .init(
      "empty manual pool", field: "natGateways[gw].natIps", reason: "at least one NAT IP", InvalidIntent.with(gateways: [Fixture.manual([])])),
    .init(
      "auto pool address twice", field: "autoNatIpPools[r2].natIps[0]", reason: "already in the auto-allocation pool",
      InvalidIntent.with(autoPool: ["198.51.100.1"]) { $0.autoNatIpPools.append(AutoNATIPPool(region: "r2", natIps: ["198.51.100.1"])) }),

    // Gateways: NAT rules.
    .init(
      "duplicate rule number", field: "natGateways[gw].rules[1].ruleNumber", reason: "duplicate rule number 100 (also rules[0])",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1"], rules: [Fixture.rule(100, ["203.0.113.2"]), Fixture.rule(100, ["203.0.113.3"])])])),
    .init(
      "rule number above 65000", field: "natGateways[gw].rules[0].ruleNumber", reason: "between 1 and 65000 (got 65001",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1"], rules: [Fixture.rule(65001, ["203.0.113.2"])])])),
    .init(
      "negative rule number", field: "natGateways[gw].rules[0].ruleNumber", reason: "between 1 and 65000 (got -1",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1"], rules: [Fixture.rule(-1, ["203.0.113.2"])])])),
    .init(
      "rule number 0, which hosts use for the default IPs", field: "natGateways[gw].rules[0].ruleNumber",
      reason: "between 1 and 65000 (got 0; 0 stands for the gateway's default IPs)",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1"], rules: [Fixture.rule(0, ["203.0.113.2"])])])),
    .init(
      "rule match with &&", field: "natGateways[gw].rules[100].match", reason: #"unexpected "&&" at 28: only || is supported"#,
      InvalidIntent.with(gateways: [
        Fixture.manual(
          ["203.0.113.1"],
          rules: [NATRule(ruleNumber: 100, match: #"destination.ip == "1.2.3.4" && destination.ip == "1.2.3.5""#, sourceNatActiveIps: ["203.0.113.2"])])
      ])),
    .init(
      "rule match with host bits", field: "natGateways[gw].rules[7].match", reason: "has host bits set",
      InvalidIntent.with(gateways: [
        Fixture.manual(["203.0.113.1"], rules: [NATRule(ruleNumber: 7, match: #"inIpRange(destination.ip, "1.2.3.4/24")"#, sourceNatActiveIps: ["203.0.113.2"])])
      ])),
    .init(
      "rule without NAT IPs", field: "natGateways[gw].rules[100].sourceNatActiveIps", reason: "at least one NAT IP",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1"], rules: [Fixture.rule(100, [])])])),
    .init(
      "malformed rule NAT IP", field: "natGateways[gw].rules[100].sourceNatActiveIps[0]", reason: "'203.0.113' is not an IPv4 address",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1"], rules: [Fixture.rule(100, ["203.0.113"])])])),
    .init(
      "rule NAT IP listed twice", field: "natGateways[gw].rules[100].sourceNatActiveIps[1]", reason: "more than once",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1"], rules: [Fixture.rule(100, ["203.0.113.2", "203.0.113.2"])])])),
    .init(
      "rule NAT IP both active and drained", field: "natGateways[gw].rules[100].sourceNatDrainIps[0]", reason: "more than once",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1"], rules: [Fixture.rule(100, ["203.0.113.2"], drain: ["203.0.113.2"])])])),
    .init(
      "NAT IP in two rules", field: "natGateways[gw].rules[200].sourceNatActiveIps[0]", reason: "already a NAT IP of rule 100 of this gateway",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1"], rules: [Fixture.rule(100, ["203.0.113.2"]), Fixture.rule(200, ["203.0.113.2"])])])),
    .init(
      "rule NAT IP also a default NAT IP", field: "natGateways[gw].rules[100].sourceNatActiveIps[0]", reason: "already a default NAT IP of this gateway",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1"], rules: [Fixture.rule(100, ["203.0.113.1"])])])),
    .init(
      "rule NAT IP also a drained default NAT IP", field: "natGateways[gw].rules[100].sourceNatDrainIps[0]", reason: "already a default NAT IP of this gateway",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1"], rules: [Fixture.rule(100, ["203.0.113.2"], drain: ["203.0.113.1"])])])),
    .init(
      "rule NAT IP of another gateway", field: "natGateways[gw2].rules[5].sourceNatActiveIps[0]", reason: "already a NAT IP of gateway 'gw'",
      InvalidIntent.with(gateways: [
        NATGateway(
          name: "gw", router: "rt", sourceSubnetworkIpRangesToNat: .allSubnetworksAllPrimaryIpRanges, natIpAllocateOption: .manualOnly,
          natIps: ["203.0.113.1"]),
        NATGateway(
          name: "gw2", router: "rt2", natIpAllocateOption: .manualOnly, natIps: ["203.0.113.2"], rules: [Fixture.rule(5, ["203.0.113.1"])]),
      ])),
    .init(
      "NAT IP of another gateway's rule", field: "natGateways[gw2].natIps[0]", reason: "already a NAT IP of rule 5 of gateway 'gw'",
      InvalidIntent.with(gateways: [
        Fixture.manual(["203.0.113.1"], rules: [Fixture.rule(5, ["203.0.113.2"])]),
        NATGateway(name: "gw2", router: "rt2", natIpAllocateOption: .manualOnly, natIps: ["203.0.113.2"]),
      ])),
    .init(
      "rule NAT IP from the auto pool", field: "natGateways[gw].rules[100].sourceNatActiveIps[0]", reason: "auto-allocation pool of region 'r1'",
      InvalidIntent.with(gateways: [NATGateway(name: "gw", router: "rt", rules: [Fixture.rule(100, ["203.0.113.9"])])], autoPool: ["203.0.113.9"])),
    .init(
      "draining a rule IP that never was active", field: "natGateways[gw].rules[100].sourceNatDrainIps[0]", reason: "only IPs already active in the rule",
      InvalidIntent.with(gateways: [Fixture.manual(["203.0.113.1"], rules: [Fixture.rule(100, ["203.0.113.2"], drain: ["203.0.113.3"])])])),

    // Instances.
    .init(
      "NIC IP outside its subnet", field: "instances[x].networkInterfaces[0].networkIP", reason: "outside the primary range",
      InvalidIntent.with(instances: [Instance(name: "x", host: "h", networkInterfaces: [NetworkInterface(subnetwork: "s1", networkIP: "10.1.0.5")])])),
    .init(
      "malformed NIC IP", field: "instances[x].networkInterfaces[0].networkIP", reason: "not an IPv4 address",
      InvalidIntent.with(instances: [Instance(name: "x", host: "h", networkInterfaces: [NetworkInterface(subnetwork: "s1", networkIP: "10.0.0")])])),
    .init(
      "malformed external IP", field: "instances[vm1].networkInterfaces[0].externalIP", reason: "not an IPv4 address",
      InvalidIntent.with(instances: [Fixture.vm(1, externalIP: "nope")])),
    .init(
      "unknown subnet", field: "instances[x].networkInterfaces[0].subnetwork", reason: "unknown subnetwork",
      InvalidIntent.with(instances: [Instance(name: "x", host: "h", networkInterfaces: [NetworkInterface(subnetwork: "zz", networkIP: "10.0.0.5")])])),
    .init(
      "primary IP used twice", field: "instances[x].networkInterfaces[0].networkIP", reason: "already the primary IP of instance 'vm1'",
      InvalidIntent.with(instances: [
        Fixture.vm(1), Instance(name: "x", host: "h", networkInterfaces: [NetworkInterface(subnetwork: "s1", networkIP: Fixture.vm(1).networkInterfaces[0].networkIP)]),
      ])),
    .init(
      "duplicate instance", field: "instances[1].name", reason: "duplicate instance name",
      InvalidIntent.with(instances: [Fixture.vm(1), Instance(name: "vm1", host: "h", networkInterfaces: [NetworkInterface(subnetwork: "s1", networkIP: "10.0.9.9")])])),
    .init(
      "empty host", field: "instances[vm1].host", reason: "empty", InvalidIntent.with(instances: [Fixture.vm(1, host: "")])),
    .init(
      "no NICs", field: "instances[x].networkInterfaces", reason: "at least one",
      InvalidIntent.with(instances: [Instance(name: "x", host: "h", networkInterfaces: [])])),
    .init(
      "two NICs in one network", field: "instances[x].networkInterfaces[1].subnetwork", reason: "already used by networkInterfaces[0]",
      InvalidIntent.with(instances: [
        Instance(
          name: "x", host: "h",
          networkInterfaces: [NetworkInterface(subnetwork: "s1", networkIP: "10.0.0.5"), NetworkInterface(subnetwork: "s2", networkIP: "10.1.0.5")])
      ])),
    .init(
      "alias outside its range", field: "instances[vm1].networkInterfaces[0].aliasIpRanges[0].ipCidrRange", reason: "outside secondary range 'pods'",
      InvalidIntent.with(instances: [Fixture.vm(1, aliases: [AliasIPRange(ipCidrRange: "10.101.0.0/24", subnetworkRangeName: "pods")])])),
    .init(
      "alias from an unknown range", field: "instances[vm1].networkInterfaces[0].aliasIpRanges[0].subnetworkRangeName", reason: "no secondary range",
      InvalidIntent.with(instances: [Fixture.vm(1, aliases: [AliasIPRange(ipCidrRange: "10.100.0.0/24", subnetworkRangeName: "nope")])])),
    .init(
      "alias inside another VM's alias", field: "instances[vm2].networkInterfaces[0].aliasIpRanges[0].ipCidrRange", reason: "overlaps an alias IP range of instance 'vm1'",
      InvalidIntent.with(instances: [
        Fixture.vm(1, aliases: [AliasIPRange(ipCidrRange: "10.100.0.0/24", subnetworkRangeName: "pods")]),
        Fixture.vm(2, aliases: [AliasIPRange(ipCidrRange: "10.100.0.128/25", subnetworkRangeName: "pods")]),
      ])),
    .init(
      "alias containing another VM's alias", field: "instances[vm2].networkInterfaces[0].aliasIpRanges[0].ipCidrRange", reason: "overlaps an alias IP range",
      InvalidIntent.with(instances: [
        Fixture.vm(1, aliases: [AliasIPRange(ipCidrRange: "10.100.0.0/25", subnetworkRangeName: "pods")]),
        Fixture.vm(2, aliases: [AliasIPRange(ipCidrRange: "10.100.0.0/24", subnetworkRangeName: "pods")]),
      ])),
    .init(
      "alias containing another VM's primary IP", field: "instances[vm2].networkInterfaces[0].aliasIpRanges[0].ipCidrRange",
      reason: "the primary IP of instance 'vm1'",
      InvalidIntent.with(instances: [Fixture.vm(1), Fixture.vm(2, aliases: [AliasIPRange(ipCidrRange: "10.0.0.0/30")])])),
    .init(
      "primary IP inside another VM's alias", field: "instances[vm2].networkInterfaces[0].networkIP", reason: "inside an alias IP range of instance 'vm1'",
      InvalidIntent.with(instances: [Fixture.vm(1, aliases: [AliasIPRange(ipCidrRange: "10.0.0.4/30")]), Fixture.vm(2)])),
    .init(
      "alias containing its own primary IP", field: "instances[vm1].networkInterfaces[0].aliasIpRanges[0].ipCidrRange", reason: "own primary IP",
      InvalidIntent.with(instances: [Fixture.vm(1, aliases: [AliasIPRange(ipCidrRange: "10.0.0.0/24")])])),
    .init(
      "malformed alias", field: "instances[vm1].networkInterfaces[0].aliasIpRanges[0].ipCidrRange", reason: "not an IPv4 range",
      InvalidIntent.with(instances: [Fixture.vm(1, aliases: [AliasIPRange(ipCidrRange: "10.100.0.7/24", subnetworkRangeName: "pods")])])),
  ]

  @Test(arguments: cases)
  func rejected(_ invalid: InvalidIntent) {
    do {
      _ = try NATPlanner(intent: invalid.build())
      Issue.record("accepted")
    } catch {
      #expect(error.field == invalid.field)
      #expect(error.reason.contains(invalid.reasonContains), "\(error.reason)")
    }
  }

  @Test func theBaseIntentIsValid() throws {
    let planner = try NATPlanner(intent: InvalidIntent.with()())
    #expect(planner.allocations(instance: "vm1").count == 1)
  }

  /// Validate, then apply: a refused change leaves the planner exactly as it was.
  @Test(arguments: cases)
  func refusedChangeLeavesThePlannerUntouched(_ invalid: InvalidIntent) throws {
    var planner = try NATPlanner(
      intent: Fixture.intent(gateways: [Fixture.manual([Fixture.ip(1), Fixture.ip(2)])], instances: Fixture.vms(0..<20)))
    try planner.removeInstance("vm3")
    let snapshot = planner.snapshot()
    let intent = planner.intent
    let epoch = planner.epoch
    #expect(throws: PlannerValidationError.self) { try planner.apply(invalid.build()) }
    #expect(planner.snapshot() == snapshot)
    #expect(planner.intent == intent)
    #expect(planner.epoch == epoch)
  }

  @Test func refusedInstanceChangesLeaveThePlannerUntouched() throws {
    var planner = try NATPlanner(
      intent: Fixture.intent(gateways: [Fixture.manual([Fixture.ip(1)])], instances: [Fixture.vm(1, aliases: [AliasIPRange(ipCidrRange: "10.100.0.0/24", subnetworkRangeName: "pods")]), Fixture.vm(2)]))
    let snapshot = planner.snapshot()
    let intent = planner.intent
    let bad: [(Instance, String)] = [
      (Fixture.vm(3, aliases: [AliasIPRange(ipCidrRange: "10.100.0.64/26", subnetworkRangeName: "pods")]), "instances[vm3].networkInterfaces[0].aliasIpRanges[0].ipCidrRange"),
      (Instance(name: "vm2", host: "h", networkInterfaces: [NetworkInterface(subnetwork: "s1", networkIP: "10.0.0.3")]), "instances[vm2].networkInterfaces[0].networkIP"),
      (Instance(name: "vm9", host: "h", networkInterfaces: [NetworkInterface(subnetwork: "s9", networkIP: "10.0.0.99")]), "instances[vm9].networkInterfaces[0].subnetwork"),
    ]
    for (instance, field) in bad {
      do {
        try planner.upsertInstance(instance)
        Issue.record("accepted \(instance.name)")
      } catch {
        #expect(error.field == field)
      }
      #expect(planner.snapshot() == snapshot)
    }
    #expect(throws: PlannerValidationError.self) { try planner.removeInstance("nobody") }
    #expect(throws: PlannerValidationError.self) { try planner.apply(.removeNatGateway("nobody")) }
    #expect(planner.snapshot() == snapshot)
    #expect(planner.intent == intent)

    // An instance may keep (or shrink) its own alias range when it is updated.
    try planner.upsertInstance(Fixture.vm(1, aliases: [AliasIPRange(ipCidrRange: "10.100.0.0/25", subnetworkRangeName: "pods")]))
    #expect(planner.ports("vm1") == snapshot.allocations[0].blocks.map { "\($0.natIp):\($0.firstPort)-\($0.firstPort + $0.size - 1)" })
  }
}
