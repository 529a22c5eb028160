import HostnatAddressing

// Instances: each is compiled against the compiled topology and the addresses other instances
// hold. This runs for every VM of a full plan, so paths for errors are built only on failure.

/// An alias IP range of a NIC.
struct IntentAlias: Sendable {
  var cidr: IPv4CIDR
  /// Prefix length of the range the alias comes from (where the overlap index starts counting).
  var rangeLength: UInt8
  private var gatewayStorage: GatewayID.Storage

  /// The gateway translating the alias, nil for none.
  var gateway: GatewayID? { GatewayID(gatewayStorage) }

  init(cidr: IPv4CIDR, rangeLength: UInt8, gateway: GatewayID?) {
    self.cidr = cidr
    self.rangeLength = rangeLength
    gatewayStorage = GatewayID.Storage(gateway)
  }
}

/// A NIC with its subnet resolved and the gateways translating its sources.
struct IntentNIC: Sendable {
  var network: NetworkID
  var subnet: SubnetID
  var primaryIP: UInt32
  private var primaryGatewayStorage: GatewayID.Storage
  var aliases: [IntentAlias]

  /// The gateway translating the primary IP; nil when none does or the NIC has an external IP.
  var primaryGateway: GatewayID? { GatewayID(primaryGatewayStorage) }

  init(network: NetworkID, subnet: SubnetID, primaryIP: UInt32, primaryGateway: GatewayID?, aliases: [IntentAlias]) {
    self.network = network
    self.subnet = subnet
    self.primaryIP = primaryIP
    primaryGatewayStorage = GatewayID.Storage(primaryGateway)
    self.aliases = aliases
  }
}

typealias IntentNICs = SmallArray<IntentNIC>

/// The last subnetwork a NIC named: VMs of a full plan mostly share a few subnets.
struct SubnetCache {
  var name = ""
  var id: SubnetID? = nil
}

extension CompiledIntent {
  /// Checks one instance against the topology and the addresses other instances hold. `me` is
  /// the instance's own id in `addresses` (its current entries do not conflict with itself).
  /// With `insertAs`, the instance's addresses are also entered under that id (a full plan builds
  /// a fresh index this way: one hash lookup per primary IP instead of two); without it,
  /// `addresses` is only read.
  func compileInstance(
    _ instance: borrowing Instance, addresses: inout AddressIndex, insertAs newOwner: Int32?, me: Int32?, myNics: borrowing IntentNICs,
    lastSubnet: inout SubnetCache, ownerName: (Int32) -> String
  ) throws(PlannerValidationError) -> IntentNICs {
    var path: String { "instances[\(instance.name)]" }
    guard !instance.name.isEmpty else { throw fail("\(path).name", "must not be empty") }
    guard !instance.host.isEmpty else { throw fail("\(path).host", "must not be empty") }
    guard !instance.networkInterfaces.isEmpty else { throw fail("\(path).networkInterfaces", "an instance needs at least one network interface") }
    var nics: IntentNICs = []
    // Indices rather than enumerated(): the latter went through unspecialised value-witness
    // copies and destroys of each NetworkInterface, a tenth of a full plan's time.
    let interfaces = instance.networkInterfaces
    for n in interfaces.indices {
      let nic = try compileNIC(
        interfaces[n], path: "\(path).networkInterfaces[\(n)]", earlier: nics, addresses: &addresses, insertAs: newOwner, me: me,
        myNics: myNics, lastSubnet: &lastSubnet, ownerName: ownerName)
      nics.append(nic)
    }
    if let newOwner, nics.contains(where: { !$0.aliases.isEmpty }) { addresses.insertAliases(nics, owner: newOwner) }
    return nics
  }

  @inline(__always)
  private func compileNIC(
    _ nic: NetworkInterface, path: @autoclosure () -> String, earlier nics: borrowing IntentNICs, addresses: inout AddressIndex,
    insertAs newOwner: Int32?, me: Int32?, myNics: borrowing IntentNICs, lastSubnet: inout SubnetCache, ownerName: (Int32) -> String
  ) throws(PlannerValidationError) -> IntentNIC {
    let s: SubnetID
    if let cached = lastSubnet.id, lastSubnet.name == nic.subnetwork {
      s = cached
    } else {
      guard let found = subnetIndex[nic.subnetwork] else { throw fail("\(path()).subnetwork", "unknown subnetwork '\(nic.subnetwork)'") }
      s = found
      lastSubnet = SubnetCache(name: nic.subnetwork, id: found)
    }
    // Scalars only: copying the whole subnet (names, arrays) costs retains on every VM.
    let network = subnets[s.index].network
    let primaryRange = subnets[s.index].primary
    if let other = nics.firstIndex(where: { $0.network == network }) {
      throw fail("\(path()).subnetwork", "network '\(intent.networks[network.index].name)' is already used by networkInterfaces[\(other)]; each NIC must be in a different network")
    }
    let ip = try parseAddress(nic.networkIP, field: "\(path()).networkIP")
    guard primaryRange.contains(IPv4Address(ip)) else {
      throw fail("\(path()).networkIP", "\(nic.networkIP) is outside the primary range \(primaryRange) of subnetwork '\(subnets[s.index].name)'")
    }
    let key = AddressIndex.key(network, ip)
    if let newOwner, let owner = addresses.primary.updateValue(newOwner, forKey: key) {
      throw fail("\(path()).networkIP", "\(nic.networkIP) is already the primary IP of instance '\(ownerName(owner))'")
    }
    if newOwner == nil, let owner = addresses.primary[key], owner != me {
      throw fail("\(path()).networkIP", "\(nic.networkIP) is already the primary IP of instance '\(ownerName(owner))'")
    }
    if let owner = addresses.aliasOwner(containing: ip, network: network), owner != me {
      throw fail("\(path()).networkIP", "\(nic.networkIP) is inside an alias IP range of instance '\(ownerName(owner))'")
    }
    if let external = nic.externalIP { _ = try parseAddress(external, field: "\(path()).externalIP") }

    var aliases: [IntentAlias] = []
    for (a, alias) in nic.aliasIpRanges.enumerated() {
      let compiled = try compileAlias(
        alias, path: "\(path()).aliasIpRanges[\(a)]", nic: nic, subnet: s, ip: ip, earlier: aliases, addresses: addresses, me: me,
        myNics: myNics, ownerName: ownerName)
      aliases.append(compiled)
    }
    return IntentNIC(
      network: network, subnet: s, primaryIP: ip, primaryGateway: nic.externalIP == nil ? subnets[s.index].primaryGateway : nil, aliases: aliases)
  }

  private func compileAlias(
    _ alias: AliasIPRange, path: @autoclosure () -> String, nic: NetworkInterface, subnet s: SubnetID, ip: UInt32, earlier aliases: [IntentAlias],
    addresses: borrowing AddressIndex, me: Int32?, myNics: borrowing IntentNICs, ownerName: (Int32) -> String
  ) throws(PlannerValidationError) -> IntentAlias {
    let subnet = subnets[s.index]
    let cidr = try parseCIDR(alias.ipCidrRange, field: "\(path()).ipCidrRange")
    var container = subnet.primary
    var gateway = subnet.primaryGateway
    if let name = alias.subnetworkRangeName {
      guard let r = subnet.secondaryNames.firstIndex(of: name) else {
        throw fail("\(path()).subnetworkRangeName", "subnetwork '\(subnet.name)' has no secondary range '\(name)'")
      }
      container = subnet.secondaries[r]
      gateway = subnet.secondaryGateways[r]
    }
    guard container.contains(cidr) else {
      throw fail("\(path()).ipCidrRange", "\(cidr) is outside \(alias.subnetworkRangeName.map { "secondary range '\($0)'" } ?? "the primary range") \(container) of subnetwork '\(subnet.name)'")
    }
    if cidr.contains(IPv4Address(ip)) {
      throw fail("\(path()).ipCidrRange", "\(cidr) contains the interface's own primary IP \(nic.networkIP)")
    }
    if let previous = aliases.firstIndex(where: { $0.cidr.overlaps(cidr) }) {
      throw fail("\(path()).ipCidrRange", "\(cidr) overlaps aliasIpRanges[\(previous)] of the same interface")
    }
    // Existing aliases at or below `cidr`, minus this instance's own (it is being replaced).
    let key = AliasKey(network: subnet.network, base: cidr.first.value, length: UInt8(cidr.prefixLength))
    var below = addresses.aliasesBelow[key, default: 0]
    if below > 0 {
      for k in myNics.indices where myNics[k].network == subnet.network {
        for own in myNics[k].aliases where cidr.contains(own.cidr) { below -= 1 }
      }
    }
    if below > 0 { throw fail("\(path()).ipCidrRange", "\(cidr) overlaps an alias IP range of another instance") }
    if let owner = addresses.aliasOwner(containing: cidr.first.value, network: subnet.network, shorterThan: cidr.prefixLength), owner != me {
      throw fail("\(path()).ipCidrRange", "\(cidr) overlaps an alias IP range of instance '\(ownerName(owner))'")
    }
    // Only aliases from the primary range can contain other NICs' primary IPs.
    if alias.subnetworkRangeName == nil {
      try Self.checkNoPrimaryIP(in: cidr, network: subnet.network, path: path(), addresses: addresses, me: me, ownerName: ownerName)
    }
    return IntentAlias(cidr: cidr, rangeLength: UInt8(container.prefixLength), gateway: gateway)
  }

  /// No other instance's primary IP lies in `cidr`: probed address by address for small ranges,
  /// by a scan of the network's primary IPs for large ones.
  private static func checkNoPrimaryIP(
    in cidr: IPv4CIDR, network: NetworkID, path: @autoclosure () -> String, addresses: borrowing AddressIndex, me: Int32?,
    ownerName: (Int32) -> String
  ) throws(PlannerValidationError) {
    func failure(_ address: UInt32, _ owner: Int32) -> PlannerValidationError {
      fail("\(path()).ipCidrRange", "\(cidr) contains \(IPv4Address(address)), the primary IP of instance '\(ownerName(owner))'")
    }
    if cidr.size <= 4096 {
      for address in cidr.first.value...cidr.last.value {
        if let owner = addresses.primary[AddressIndex.key(network, address)], owner != me { throw failure(address, owner) }
      }
    } else {
      for (key, owner) in addresses.primary where owner != me && key >> 32 == UInt64(UInt32(bitPattern: network.raw)) {
        if cidr.contains(IPv4Address(UInt32(truncatingIfNeeded: key))) { throw failure(UInt32(truncatingIfNeeded: key), owner) }
      }
    }
  }
}
