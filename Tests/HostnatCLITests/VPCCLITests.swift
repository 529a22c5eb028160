import Foundation
import Testing

/// The network around NAT through the real binary: the seed's Cloud Run walkthrough typed as in
/// the seed (connector, NAT, three services), and the gcloud-style commands for firewall rules,
/// routes, NAT rules, projects and peering. (The two lab scenarios run in ScenarioTests, one lab
/// at a time.)
@Suite(.timeLimit(.minutes(6)))
struct VPCCLITests {
  @Test func theSeedsCloudRunCommandsAndTheVPCCommands() async throws {
    let directory = try TemporaryDirectory()
    let controller = try await ControllerProcess(dataDirectory: directory.path, extraArguments: [])
    let region = "us-central1"
    let seed: [[String]] = [
      ["networks", "create", "cloudrun-vpc", "--google-apis-range", "198.51.100.8/30"],
      ["compute", "networks", "vpc-access", "connectors", "create", "cloudrun-connector", "--network", "cloudrun-vpc", "--region", region,
       "--range", "10.8.0.0/28", "--min-instances", "2", "--max-instances", "10", "--hosts", "host-a,host-b"],
      ["routers", "create", "cloudrun-nat-router", "--network", "cloudrun-vpc", "--region", region],
      ["addresses", "create", "cloudrun-nat-ip", "--region", region],
      ["routers", "nats", "create", "cloudrun-nat-gateway", "--router", "cloudrun-nat-router", "--region", region,
       "--nat-external-ip-pool", "cloudrun-nat-ip", "--nat-all-subnet-ip-ranges", "--enable-dynamic-port-allocation",
       "--min-ports-per-vm", "512", "--max-ports-per-vm", "4096"],
      ["run", "deploy", "service-a", "--image", "gcr.io/p/service-a:latest", "--region", region, "--vpc-connector", "cloudrun-connector", "--vpc-egress", "all-traffic"],
      ["run", "deploy", "service-b", "--region", region, "--vpc-connector", "cloudrun-connector", "--vpc-egress", "all-traffic"],
      ["run", "deploy", "service-c", "--region", region, "--vpc-connector", "cloudrun-connector", "--vpc-egress", "all-traffic", "--instances", "9"],
    ]
    for command in seed {
      let result = try await controller.cli(command)
      try #require(result.exitCode == 0, "\(command): \(result.stderr)")
    }
    let connector = try #require(try await controller.json(["compute", "networks", "vpc-access", "connectors", "describe", "cloudrun-connector", "--region", region]) as? [String: Any])
    #expect(connector["state"] as? String == "READY")
    #expect(connector["ipCidrRange"] as? String == "10.8.0.0/28" && connector["network"] as? String == "cloudrun-vpc")
    #expect((connector["instances"] as? [String])?.count == 3, "11 serverless instances at 4 per connector instance: \(connector)")
    let services = try #require(try await controller.json(["run", "services", "list"]) as? [[String: Any]])
    #expect(services.map { $0["name"] as? String } == ["service-a", "service-b", "service-c"])
    #expect(services.allSatisfy { $0["vpcEgress"] as? String == "ALL_TRAFFIC" })
    let mapping = try #require(try await controller.json(["routers", "get-nat-mapping-info", "cloudrun-nat-router", "--region", region]) as? [[String: Any]])
    #expect(Set(mapping.compactMap { $0["instanceName"] as? String }) == ["cloudrun-connector-1", "cloudrun-connector-2", "cloudrun-connector-3"])

    let more: [[String]] = [
      ["firewall-rules", "create", "deny-dns", "--network", "cloudrun-vpc", "--direction", "EGRESS", "--action", "deny",
       "--rules", "udp:53,tcp:53", "--destination-ranges", "192.0.2.0/24", "--priority", "900", "--enable-logging"],
      ["routes", "create", "via-vpn", "--network", "cloudrun-vpc", "--destination-range", "198.51.100.64/26", "--next-hop-vpn-tunnel", "tunnel-1"],
      ["addresses", "create", "rule-ip", "--region", region, "--addresses", "203.0.113.77"],
      ["routers", "nats", "rules", "create", "100", "--nat", "cloudrun-nat-gateway", "--router", "cloudrun-nat-router", "--region", region,
       "--match", #"destination.ip == "203.0.113.7" || inIpRange(destination.ip, "203.0.113.0/28")"#, "--source-nat-active-ips", "rule-ip"],
      ["projects", "create", "host-proj", "--shared-vpc-host"],
      ["projects", "create", "svc-proj", "--shared-vpc-host-project", "host-proj"],
      ["networks", "create", "peer-vpc"],
      ["networks", "peerings", "create", "p1", "--network", "cloudrun-vpc", "--peer-network", "peer-vpc"],
      ["networks", "update", "peer-vpc", "--google-apis-range", "198.51.100.12/30"],
      ["networks", "subnets", "create", "peer-subnet", "--network", "peer-vpc", "--region", region, "--range", "10.30.0.0/24"],
      ["instances", "create", "two-nic", "--host", "host-a", "--subnet", "vpc-access-cloudrun-connector", "--extra-nic", "peer-subnet", "--tags", "blue"],
      ["firewall-rules", "create", "allow-http", "--network", "cloudrun-vpc", "--action", "allow", "--rules", "tcp:80", "--target-tags", "http-server,web"],
      ["instances", "add-tags", "two-nic", "--tags", "http-server,green"],
      ["instances", "remove-tags", "two-nic", "--tags", "blue"],
      ["networks", "subnets", "update", "peer-subnet", "--region", region, "--enable-private-ip-google-access"],
    ]
    for command in more {
      let result = try await controller.cli(command)
      try #require(result.exitCode == 0, "\(command): \(result.stderr)")
    }
    let rules = try #require(try await controller.json(["firewall-rules", "list"]) as? [[String: Any]])
    let rule = try #require(rules.first)
    #expect(rule["direction"] as? String == "EGRESS" && rule["priority"] as? Int == 900 && rule["enableLogging"] as? Bool == true)
    #expect((rule["rules"] as? [[String: Any]])?.map { $0["ipProtocol"] as? String } == ["udp", "tcp"])
    #expect(rules.first { $0["name"] as? String == "allow-http" }?["targetTags"] as? [String] == ["http-server", "web"])
    let routes = try #require(try await controller.json(["routes", "list"]) as? [[String: Any]])
    #expect((routes.first?["nextHop"] as? [String: Any])?["vpnTunnel"] as? String == "tunnel-1")
    let natRules = try #require(try await controller.json(["routers", "nats", "rules", "list", "--nat", "cloudrun-nat-gateway", "--router", "cloudrun-nat-router", "--region", region]) as? [[String: Any]])
    #expect(natRules.first?["ruleNumber"] as? Int == 100 && natRules.first?["sourceNatActiveIps"] as? [String] == ["rule-ip"])
    let network = try #require(try await controller.json(["networks", "describe", "cloudrun-vpc"]) as? [String: Any])
    #expect(network["peerNetworks"] as? [String] == ["peer-vpc"] && network["googleApisRange"] as? String == "198.51.100.8/30")
    let peer = try #require(try await controller.json(["networks", "describe", "peer-vpc"]) as? [String: Any])
    #expect(peer["googleApisRange"] as? String == "198.51.100.12/30", "networks update")
    let peerSubnet = try #require(try await controller.json(["networks", "subnets", "describe", "peer-subnet", "--region", region]) as? [String: Any])
    #expect(peerSubnet["privateIpGoogleAccess"] as? Bool == true, "subnets update")
    let twoNIC = try #require(try await controller.json(["instances", "describe", "two-nic"]) as? [String: Any])
    #expect((twoNIC["networkInterfaces"] as? [[String: Any]])?.map { $0["subnet"] as? String } == ["vpc-access-cloudrun-connector", "peer-subnet"])
    #expect(twoNIC["tags"] as? [String] == ["http-server", "green"], "create --tags, add-tags, remove-tags")
    let connectorVM = try #require(try await controller.json(["instances", "describe", "cloudrun-connector-1"]) as? [String: Any])
    #expect(connectorVM["tags"] as? [String] == ["vpc-connector", "vpc-connector-\(region)-cloudrun-connector"])

    // Refusals name the field and change nothing.
    let refusals: [([String], String)] = [
      (["firewall-rules", "create", "x", "--network", "cloudrun-vpc", "--action", "maybe", "--rules", "tcp"], "--action"),
      (["firewall-rules", "create", "x", "--network", "cloudrun-vpc", "--action", "allow", "--rules", "tcp:99999"], "ports[0]"),
      (["routes", "create", "x", "--network", "cloudrun-vpc", "--destination-range", "10.0.0.0/8"], "--next-hop-instance"),
      (["routers", "nats", "rules", "create", "200", "--nat", "cloudrun-nat-gateway", "--router", "cloudrun-nat-router", "--region", region,
        "--match", "source.ip == \"10.0.0.1\"", "--source-nat-active-ips", "rule-ip"], "match"),
      (["run", "deploy", "svc-x", "--region", region, "--vpc-connector", "cloudrun-connector", "--vpc-egress", "sometimes"], "--vpc-egress"),
      (["compute", "networks", "vpc-access", "connectors", "create", "c2", "--network", "cloudrun-vpc", "--region", region, "--range", "10.9.0.0/24"], "ipCidrRange"),
      (["instances", "delete", "cloudrun-connector-1"], "managed by connector cloudrun-connector"),
      (["instances", "add-tags", "two-nic", "--tags", "ok,Not_A_Tag"], "add[1]"),
      (["firewall-rules", "create", "x", "--network", "cloudrun-vpc", "--action", "allow", "--rules", "tcp", "--target-tags", "Web_Tier"], "targetTags[0]"),
      (["routers", "create", "r-svc", "--network", "peer-vpc", "--region", region, "--project", "svc-proj"], "project"),
      // The connector's subnet is NATed (all subnets), so Private Google Access cannot go off.
      (["networks", "subnets", "update", "vpc-access-cloudrun-connector", "--region", region, "--no-enable-private-ip-google-access"], "privateIpGoogleAccess"),
    ]
    for (command, field) in refusals {
      let result = try await controller.cli(command)
      #expect(result.exitCode != 0 && result.stderr.contains("ERROR: (hostnat.") && result.stderr.contains(field), "\(command): \(result.stderr)")
    }
    #expect((try await controller.json(["routes", "list"]) as? [[String: Any]])?.count == 1)
    #expect((try await controller.json(["instances", "list"]) as? [[String: Any]])?.count == 4, "3 connector instances and two-nic")
  }
}
