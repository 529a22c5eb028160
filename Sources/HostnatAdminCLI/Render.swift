import HostnatProto
import SwiftProtobuf

/// Per-resource output: the table columns gcloud shows (narrowed to fit 80 columns), and the
/// protobuf JSON for json/yaml. Lists print a JSON array, single resources an object.
enum Render {
  static func many<M: SwiftProtobuf.Message>(
    _ items: [M], format: OutputFormat, single: Bool, defaults: [String: JSONValue] = [:], table: () -> Table
  ) {
    let values = items.map { JSONValue.message($0, defaults: defaults) }
    let value: JSONValue = single && values.count == 1 ? values[0] : .array(values)
    emit(value, format: format) { table().render() }
  }

  static func networks(_ items: [Hostnat_V1_Network], format: OutputFormat, single: Bool) {
    many(items, format: format, single: single) {
      var table = Table(["NAME", "PEERINGS", "DESCRIPTION"])
      for n in items { table.add([n.name, list(n.peerNetworks), n.description_p]) }
      return table
    }
  }

  static func subnets(_ items: [Hostnat_V1_Subnet], format: OutputFormat, single: Bool) {
    many(items, format: format, single: single) {
      var table = Table(["NAME", "REGION", "NETWORK", "RANGE", "SECONDARY_RANGES"])
      for s in items {
        table.add([s.name, s.region, s.network, s.ipCidrRange, list(s.secondaryRanges.map { "\($0.rangeName)=\($0.ipCidrRange)" })])
      }
      return table
    }
  }

  static func routers(_ items: [Hostnat_V1_Router], format: OutputFormat, single: Bool) {
    many(items, format: format, single: single) {
      var table = Table(["NAME", "REGION", "NETWORK", "NATS"])
      for r in items { table.add([r.name, r.region, r.network, list(r.nats.map(\.name))]) }
      return table
    }
  }

  static func nats(_ items: [Hostnat_V1_NatGateway], format: OutputFormat, single: Bool) {
    many(items, format: format, single: single) {
      var table = Table(["NAME", "NAT_IP_ALLOCATE_OPTION", "SOURCE_SUBNETWORK_IP_RANGES_TO_NAT", "NAT_IPS"])
      for n in items {
        let option = n.natIpAllocateOption == .manualOnly ? "MANUAL_ONLY" : "AUTO_ONLY"
        table.add([n.name, option, enumName(n.sourceSubnetworkIpRangesToNat), list(n.natIps)])
      }
      return table
    }
  }

  static func addresses(_ items: [Hostnat_V1_Address], format: OutputFormat, single: Bool) {
    many(items, format: format, single: single) {
      var table = Table(["NAME", "ADDRESS", "REGION", "STATUS", "USERS"])
      for a in items { table.add([a.name, a.address, a.region, enumName(a.status), a.user]) }
      return table
    }
  }

  static func instances(_ items: [Hostnat_V1_Instance], format: OutputFormat, single: Bool) {
    many(items, format: format, single: single) {
      var table = Table(["NAME", "REGION", "HOST", "INTERNAL_IP", "EXTERNAL_IP", "ALIAS_RANGES", "TAGS"])
      for i in items {
        let nics = i.networkInterfaces
        table.add([
          i.name, i.region, i.host, list(nics.map(\.networkIp)), list(nics.map(\.externalIp).filter { !$0.isEmpty }),
          list(nics.flatMap { $0.aliasIpRanges.map(\.ipCidrRange) }), list(i.tags),
        ])
      }
      return table
    }
  }

  static func hosts(_ response: Hostnat_V1_ListHostsResponse, format: OutputFormat) {
    let items = response.hosts
    if format == .table {
      Console.err("controller store \(response.storeID.prefix(12)) epoch \(response.epoch), fencing \(response.fencingMode), \(response.conflictingBlocks) conflicting block(s)\n")
    }
    many(items, format: format, single: false, defaults: ["connected": .bool(false)]) {
      // NOTE: what needs the operator first (an alarm, a conflict, a held-back config, a NACK);
      // `--format json` has every field.
      var table = Table(["HOST", "KIND", "CONNECTED", "LATEST", "SENT", "ACKED", "VMS", "BLOCKS", "NOTE"])
      for h in items {
        var notes: [String] = []
        if !h.alarm.isEmpty { notes.append(h.alarm) }
        if !h.conflictingBlocks.isEmpty { notes.append("\(h.conflictingBlocks.count) conflicting") }
        if h.quarantinedBlocks > 0 { notes.append("\(h.quarantinedBlocks) quarantined") }
        if h.fenced { notes.append("was fenced") }
        if !h.heldBack.isEmpty { notes.append("held back: \(h.heldBack)") }
        if !h.lastNackReason.isEmpty { notes.append(h.lastNackReason) }
        table.add([
          h.hostID, h.kind == .edge ? "EDGE" : "AGENT", h.connected ? "yes" : "no", "\(h.latestVersion)",
          "\(h.lastVersionSent)", "\(h.lastVersionAcked)", "\(h.instances)", "\(h.heldBlocks)", notes.joined(separator: "; "),
        ])
      }
      return table
    }
  }

  static func routerStatus(_ response: Hostnat_V1_RouterStatusResponse, format: OutputFormat) {
    let natStatus = response.result.natStatus.map {
      JSONValue.message($0, defaults: ["minExtraNatIpsNeeded": .int(0), "numVmEndpointsWithNatMappings": .int(0)])
    }
    var result = JSONValue.message(response.result)
    if case .object(var fields) = result {
      fields["natStatus"] = .array(natStatus)
      result = .object(fields)
    }
    let value = JSONValue.object(["kind": .string(response.kind), "result": result])
    emit(value, format: format) {
      var table = Table(["NAT", "AUTO_IPS", "USER_IPS", "DRAIN_IPS", "MIN_EXTRA_IPS", "VM_ENDPOINTS"])
      for s in response.result.natStatus {
        table.add([
          s.name, list(s.autoAllocatedNatIps), list(s.userAllocatedNatIps),
          list(s.drainUserAllocatedNatIps + s.drainAutoAllocatedNatIps), "\(s.minExtraNatIpsNeeded)",
          "\(s.numVmEndpointsWithNatMappings)",
        ])
      }
      return table.render()
    }
  }

  static func mappingInfo(_ response: Hostnat_V1_NatMappingInfoResponse, format: OutputFormat) {
    let defaults: [String: JSONValue] = [
      "natIpPortRanges": .array([]), "drainNatIpPortRanges": .array([]),
      "numTotalNatPorts": .int(0), "numTotalDrainNatPorts": .int(0),
    ]
    let value = JSONValue.array(response.result.map { vm in
      .object([
        "instanceName": .string(vm.instanceName),
        "interfaceNatMappings": .array(vm.interfaceNatMappings.map { JSONValue.message($0, defaults: defaults) }),
      ])
    })
    emit(value, format: format) {
      var table = Table(["INSTANCE", "SOURCE", "NAT_IP_PORT_RANGES", "PORTS", "DRAIN_RANGES", "DRAIN_PORTS"])
      for vm in response.result {
        for m in vm.interfaceNatMappings {
          table.add([
            vm.instanceName, m.sourceVirtualIp.isEmpty ? m.sourceAliasIpRange : m.sourceVirtualIp,
            list(m.natIpPortRanges), "\(m.numTotalNatPorts)", list(m.drainNatIpPortRanges), "\(m.numTotalDrainNatPorts)",
          ])
        }
      }
      table.maxCell = 60
      return table.render()
    }
  }

  static func whoHad(_ response: Hostnat_V1_WhoHadResponse, endpoint: String, atMs: Int64, format: OutputFormat) {
    let value = JSONValue.message(response, defaults: ["found": .bool(false)])
    emit(value, format: format) {
      guard response.found else { return "nobody held \(endpoint) at \(atMs == 0 ? "now" : rfc3339(atMs))\n" }
      return keyValueTable([
        ("instance", response.instance), ("interface", response.interface), ("host", response.host),
        ("gateway", response.gateway), ("natIpPortRange", response.natIpPortRange), ("from", rfc3339(response.fromMs)),
        ("until", response.untilMs == 0 ? "still held" : rfc3339(response.untilMs)), ("drained", response.drained ? "yes" : "no"),
      ])
    }
  }

  /// gcloud prints "Deleted [...]." on stderr; json/yaml also show the response (with the
  /// config versions the change produced per host).
  static func deleted(_ what: String, _ response: Hostnat_V1_DeleteResponse, format: OutputFormat?) {
    Console.err("Deleted [\(what)].\n")
    if let format, format != .table {
      emit(JSONValue.message(response), format: format) { "" }
    }
  }

  static func enumName(_ value: Hostnat_V1_SourceSubnetworkIpRangesToNat) -> String {
    switch value {
    case .allSubnetworksAllIpRanges: "ALL_SUBNETWORKS_ALL_IP_RANGES"
    case .allSubnetworksAllPrimaryIpRanges: "ALL_SUBNETWORKS_ALL_PRIMARY_IP_RANGES"
    case .listOfSubnetworks: "LIST_OF_SUBNETWORKS"
    default: "-"
    }
  }

  static func enumName(_ value: Hostnat_V1_AddressStatus) -> String {
    switch value {
    case .reserved: "RESERVED"
    case .inUse: "IN_USE"
    default: "-"
    }
  }
}
