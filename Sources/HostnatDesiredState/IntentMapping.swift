public import HostnatAddressing
public import HostnatPlanner
public import HostnatProto

/// The stored intent, as the admin API speaks it (protobuf resources).
public struct StoredIntent: Sendable, Equatable {
  public var networks: [Hostnat_V1_Network] = []
  public var subnets: [Hostnat_V1_Subnet] = []
  /// Routers with their NAT gateways.
  public var routers: [Hostnat_V1_Router] = []
  public var addresses: [Hostnat_V1_Address] = []
  /// Includes the VMs the controller manages itself: serverless connector instances and Direct
  /// VPC egress service instances (see ServerlessModel).
  public var instances: [Hostnat_V1_Instance] = []
  public var firewallRules: [Hostnat_V1_FirewallRule] = []
  public var routes: [Hostnat_V1_Route] = []
  public var projects: [Hostnat_V1_Project] = []
  public var connectors: [Hostnat_V1_ServerlessConnector] = []
  public var services: [Hostnat_V1_ServerlessService] = []

  public init() {}
}

/// Translates the admin API's resources into the planner's intent. This is the one place where
/// protobuf meets the pure planner: names of reserved addresses are resolved to their IPs,
/// unset enums are rejected with the field, and defaults stay unset so the planner applies
/// (and reports) them.
public enum IntentMapping {
  /// Planner gateway names are unique across the intent, while Cloud NAT's are unique per
  /// router; the key "region/router/nat" is both unique and what hosts and logs show.
  public static func gatewayKey(region: String, router: String, nat: String) -> String {
    "\(region)/\(router)/\(nat)"
  }

  /// Builds the planner's intent. `autoPools` maps a region to the IPs AUTO_ONLY gateways may
  /// take, in order.
  public static func natIntent(_ stored: StoredIntent, autoPools: [String: [String]]) throws(PlannerValidationError) -> NATIntent {
    let addressByName = Dictionary(stored.addresses.map { ("\($0.region)/\($0.name)", $0.address) }, uniquingKeysWith: { first, _ in first })
    var gateways: [NATGateway] = []
    for router in stored.routers {
      for nat in router.nats {
        gateways.append(try natGateway(nat, router: router, addresses: addressByName))
      }
    }
    return NATIntent(
      networks: stored.networks.map { Network(name: $0.name) },
      subnetworks: stored.subnets.map { subnet in
        Subnetwork(
          name: subnet.name, network: subnet.network, region: subnet.region, ipCidrRange: subnet.ipCidrRange,
          secondaryIpRanges: subnet.secondaryRanges.map { .init(rangeName: $0.rangeName, ipCidrRange: $0.ipCidrRange) })
      },
      routers: stored.routers.map { routerKey($0) },
      natGateways: gateways,
      autoNatIpPools: autoPools.keys.sorted().map { AutoNATIPPool(region: $0, natIps: autoPools[$0] ?? []) },
      instances: stored.instances.map(instance)
    )
  }

  /// Routers are named per region in the API and globally in the planner.
  static func routerKey(_ router: Hostnat_V1_Router) -> Router {
    Router(name: "\(router.region)/\(router.name)", network: router.network, region: router.region)
  }

  static func natGateway(
    _ nat: Hostnat_V1_NatGateway, router: Hostnat_V1_Router, addresses: [String: String]
  ) throws(PlannerValidationError) -> NATGateway {
    let field = "routers[\(router.region)/\(router.name)].nats[\(nat.name)]"
    let selection: NATGateway.SourceSubnetworkIPRangesToNAT
    switch nat.sourceSubnetworkIpRangesToNat {
    case .allSubnetworksAllIpRanges: selection = .allSubnetworksAllIpRanges
    case .allSubnetworksAllPrimaryIpRanges: selection = .allSubnetworksAllPrimaryIpRanges
    case .listOfSubnetworks: selection = .listOfSubnetworks
    case .unspecified, .UNRECOGNIZED:
      throw PlannerValidationError(
        field: "\(field).sourceSubnetworkIpRangesToNat",
        reason: "choose --nat-all-subnet-ip-ranges, --nat-primary-subnet-ip-ranges or --nat-custom-subnet-ip-ranges")
    }
    var subnetworks: [NATGateway.SubnetworkToNAT] = []
    for (index, subnet) in nat.subnetworks.enumerated() {
      var ranges: [NATGateway.SourceIPRanges] = []
      for option in subnet.sourceIpRangesToNat {
        switch option {
        case .allIpRanges: ranges.append(.allIpRanges)
        case .primaryIpRange: ranges.append(.primaryIpRange)
        case .listOfSecondaryIpRanges: ranges.append(.listOfSecondaryIpRanges)
        case .unspecified, .UNRECOGNIZED:
          throw PlannerValidationError(
            field: "\(field).subnetworks[\(index)].sourceIpRangesToNat", reason: "unknown range selection \(option.rawValue)")
        }
      }
      subnetworks.append(.init(
        name: subnet.name, sourceIpRangesToNat: ranges.isEmpty ? [.allIpRanges] : ranges,
        secondaryIpRangeNames: subnet.secondaryIpRangeNames))
    }
    let allocate: NATGateway.NATIPAllocateOption
    switch nat.natIpAllocateOption {
    case .manualOnly: allocate = .manualOnly
    case .autoOnly, .unspecified: allocate = .autoOnly
    case .UNRECOGNIZED(let value):
      throw PlannerValidationError(field: "\(field).natIpAllocateOption", reason: "unknown option \(value)")
    }
    // A NAT IP may be given as a reserved address's name (as gcloud takes it) or as the IP.
    func resolve(_ names: [String]) -> [String] {
      names.map { addresses["\(router.region)/\($0)"] ?? $0 }
    }
    let timeouts = nat.hasTimeouts ? nat.timeouts : Hostnat_V1_NatTimeouts()
    let filter: NATGateway.LogConfig.Filter
    switch nat.logConfig.filter {
    case .errorsOnly: filter = .errorsOnly
    case .translationsOnly: filter = .translationsOnly
    case .all, .unspecified: filter = .all
    case .UNRECOGNIZED(let value):
      throw PlannerValidationError(field: "\(field).logConfig.filter", reason: "unknown filter \(value)")
    }
    return NATGateway(
      name: gatewayKey(region: router.region, router: router.name, nat: nat.name),
      router: "\(router.region)/\(router.name)",
      sourceSubnetworkIpRangesToNat: selection,
      subnetworks: subnetworks,
      natIpAllocateOption: allocate,
      natIps: resolve(nat.natIps),
      drainNatIps: resolve(nat.drainNatIps),
      minPortsPerVm: nat.minPortsPerVm == 0 ? nil : Int(nat.minPortsPerVm),
      maxPortsPerVm: nat.maxPortsPerVm == 0 ? nil : Int(nat.maxPortsPerVm),
      enableDynamicPortAllocation: nat.enableDynamicPortAllocation,
      enableEndpointIndependentMapping: nat.hasEnableEndpointIndependentMapping ? nat.enableEndpointIndependentMapping : nil,
      udpIdleTimeoutSec: optional(timeouts.udpIdleTimeoutSec),
      icmpIdleTimeoutSec: optional(timeouts.icmpIdleTimeoutSec),
      tcpEstablishedIdleTimeoutSec: optional(timeouts.tcpEstablishedIdleTimeoutSec),
      tcpTransitoryIdleTimeoutSec: optional(timeouts.tcpTransitoryIdleTimeoutSec),
      tcpTimeWaitTimeoutSec: optional(timeouts.tcpTimeWaitTimeoutSec),
      logConfig: .init(enable: nat.logConfig.enable, filter: filter),
      rules: nat.rules.map {
        NATRule(
          ruleNumber: Int($0.ruleNumber), match: $0.match, sourceNatActiveIps: resolve($0.sourceNatActiveIps),
          sourceNatDrainIps: resolve($0.sourceNatDrainIps), description: $0.description_p)
      }
    )
  }

  static func optional(_ seconds: UInt32) -> Int? { seconds == 0 ? nil : Int(seconds) }

  static func instance(_ instance: Hostnat_V1_Instance) -> Instance {
    Instance(
      name: instance.name, host: instance.host,
      networkInterfaces: instance.networkInterfaces.map { nic in
        NetworkInterface(
          subnetwork: nic.subnet, networkIP: nic.networkIp,
          aliasIpRanges: nic.aliasIpRanges.map {
            AliasIPRange(ipCidrRange: $0.ipCidrRange, subnetworkRangeName: $0.subnetworkRangeName.isEmpty ? nil : $0.subnetworkRangeName)
          },
          externalIP: nic.externalIp.isEmpty ? nil : nic.externalIp)
      })
  }
}
