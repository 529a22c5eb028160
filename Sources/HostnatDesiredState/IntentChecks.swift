import HostnatAddressing
public import HostnatProto

/// Checks of names and references that the planner cannot make (it sees no addresses and no
/// resource names as the user typed them), each failing with the field and the reason. The
/// admin API and the whole-intent checks share them.
public enum IntentChecks {
  /// gcloud's rule: 1-63 characters of [a-z0-9-], starting with a letter, not ending with "-".
  public static func name(_ value: String, field: String) throws {
    let bytes = Array(value.utf8)
    let valid = (1...63).contains(bytes.count)
      && bytes.first.map { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) } == true
      && bytes.last != UInt8(ascii: "-")
      && bytes.allSatisfy { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "-") }
    if !valid {
      throw AdminError(
        .invalidArgument, field: field,
        reason: "\"\(value)\" is not a valid name: 1-63 lowercase letters, digits or hyphens, starting with a letter")
    }
  }

  /// Most network tags an instance can carry (Compute Engine's limit).
  public static let maxInstanceTags = 64

  /// Checks network tags (each a valid name) and returns them without repeats, in first-seen order.
  public static func tags(_ tags: [String], field: String) throws -> [String] {
    var seen: Set<String> = []
    var out: [String] = []
    for (i, tag) in tags.enumerated() {
      try name(tag, field: "\(field)[\(i)]")
      if seen.insert(tag).inserted { out.append(tag) }
    }
    if out.count > maxInstanceTags {
      throw AdminError(.invalidArgument, field: field, reason: "\(out.count) tags; an instance carries at most \(maxInstanceTags)")
    }
    return out
  }

  public static func nonEmpty(_ value: String, field: String) throws {
    if value.isEmpty { throw AdminError(.invalidArgument, field: field, reason: "required") }
  }

  public static func ipv4(_ value: String, field: String) throws {
    if IPv4Address(value) == nil {
      throw AdminError(.invalidArgument, field: field, reason: "\"\(value)\" is not an IPv4 address")
    }
  }

  /// Finds a resource or fails with NOT_FOUND naming what was looked for.
  public static func find<T>(_ items: [T], _ kind: String, _ name: String, field: String = "name", where match: (T) -> Bool) throws -> T {
    guard let item = items.first(where: match) else {
      throw AdminError(.notFound, field: field, reason: name.isEmpty ? "\(kind) name is required" : "\(kind) \(name) not found")
    }
    return item
  }

  public static func region(_ region: String, _ request: Hostnat_V1_ResourceName) -> Bool {
    request.region.isEmpty || region == request.region
  }

  /// NAT IPs may name reserved addresses or be literal IPs, which must be reserved too (Cloud NAT
  /// only takes reserved static addresses for manual pools).
  public static func natAddresses(_ nat: Hostnat_V1_NatGateway, region: String, intent: StoredIntent) throws {
    let reserved = intent.addresses.filter { $0.region == region }
    let ruleIPs = nat.rules.flatMap { rule in
      [("nat.rules[\(rule.ruleNumber)].sourceNatActiveIps", rule.sourceNatActiveIps), ("nat.rules[\(rule.ruleNumber)].sourceNatDrainIps", rule.sourceNatDrainIps)]
    }
    for (field, names) in [("nat.natIps", nat.natIps), ("nat.drainNatIps", nat.drainNatIps)] + ruleIPs {
      for (index, name) in names.enumerated() where !reserved.contains(where: { $0.name == name || $0.address == name }) {
        throw AdminError(.notFound, field: "\(field)[\(index)]", reason: "\(name) is not a reserved address in \(region)")
      }
    }
  }

  /// Applies an update mask (proto field names) to a gateway; an empty mask replaces every
  /// settable field.
  public static func merge(_ update: Hostnat_V1_NatGateway, into nat: inout Hostnat_V1_NatGateway, mask: [String]) throws {
    let all = [
      "source_subnetwork_ip_ranges_to_nat", "subnetworks", "nat_ip_allocate_option", "nat_ips", "drain_nat_ips",
      "min_ports_per_vm", "max_ports_per_vm", "enable_dynamic_port_allocation", "enable_endpoint_independent_mapping",
      "timeouts", "log_config", "rules",
    ]
    for path in mask.isEmpty ? all : mask {
      switch path {
      case "source_subnetwork_ip_ranges_to_nat": nat.sourceSubnetworkIpRangesToNat = update.sourceSubnetworkIpRangesToNat
      case "subnetworks": nat.subnetworks = update.subnetworks
      case "nat_ip_allocate_option": nat.natIpAllocateOption = update.natIpAllocateOption
      case "nat_ips": nat.natIps = update.natIps
      case "drain_nat_ips": nat.drainNatIps = update.drainNatIps
      case "min_ports_per_vm": nat.minPortsPerVm = update.minPortsPerVm
      case "max_ports_per_vm": nat.maxPortsPerVm = update.maxPortsPerVm
      case "enable_dynamic_port_allocation": nat.enableDynamicPortAllocation = update.enableDynamicPortAllocation
      case "enable_endpoint_independent_mapping":
        if update.hasEnableEndpointIndependentMapping {
          nat.enableEndpointIndependentMapping = update.enableEndpointIndependentMapping
        } else {
          nat.clearEnableEndpointIndependentMapping()
        }
      case "timeouts": nat.timeouts = update.timeouts
      case "log_config": nat.logConfig = update.logConfig
      case "rules":
        nat.rules = update.rules.map { rule in
          var rule = rule
          rule.destinationRanges = []  // output only
          return rule
        }
      default:
        throw AdminError(.invalidArgument, field: "updateMask", reason: "\(path) cannot be updated on a NAT gateway")
      }
    }
  }

  /// Marks an address IN_USE with its user when a gateway lists it.
  public static func withUsage(_ address: Hostnat_V1_Address, intent: StoredIntent) -> Hostnat_V1_Address {
    var address = address
    address.status = .reserved
    address.user = ""
    for router in intent.routers where router.region == address.region {
      for nat in router.nats
      where (nat.natIps + nat.drainNatIps + nat.rules.flatMap { $0.sourceNatActiveIps + $0.sourceNatDrainIps })
        .contains(where: { $0 == address.name || $0 == address.address })
      {
        address.status = .inUse
        address.user = "routers/\(router.name)/nats/\(nat.name)"
      }
    }
    return address
  }

  /// The lowest free host address of the subnet's primary range, skipping the network address,
  /// the gateway (.1) and the broadcast address, as VPC subnets reserve them.
  public static func nextFreeIP(in subnet: Hostnat_V1_Subnet, intent: StoredIntent, field: String) throws -> String {
    guard let cidr = IPv4CIDR(subnet.ipCidrRange) else {
      throw AdminError(.failedPrecondition, field: field, reason: "subnet \(subnet.name) has an invalid range \(subnet.ipCidrRange)")
    }
    let used = Set(intent.instances.flatMap { $0.networkInterfaces.map(\.networkIp) })
    let first = cidr.first.value &+ 2
    let last = cidr.last.value
    if first < last {
      for value in first..<last where !used.contains("\(IPv4Address(value))") {
        return "\(IPv4Address(value))"
      }
    }
    throw AdminError(.failedPrecondition, field: field, reason: "subnet \(subnet.name) has no free address left")
  }
}
