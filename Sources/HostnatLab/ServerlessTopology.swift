/// The embedded copy of deploy/lab/serverless.yaml (a test keeps the two identical).
public let serverlessTopologyYAML = #"""
# The seed's Cloud Run walkthrough (Cloud NAT with Cloud Run via Serverless VPC Access) as a lab.
# cloudrun-vpc has a connector on its own /28 (10.8.0.0/28, min 2 / max 10 instances), a Cloud
# NAT gateway on every subnet with one reserved static IP, and serverless services:
#   service-a, service-b, service-c  share the connector with all-traffic egress: all three must be
#                                    seen from the gateway's static NAT IP;
#   nat-test-private                 uses the connector with private-ranges-only: its Internet
#                                    traffic bypasses the VPC and leaves from the platform's
#                                    ephemeral egress IP (192.0.2.192/26), never the NAT IP;
#   my-api-service                   Direct VPC egress from cloudrun-direct-subnet, all-traffic:
#                                    its instances are VMs of the subnet and get the NAT IP.
# The edge's what-is-my-IP server (192.0.2.10, "ifconfig.me") reports the source it sees.
# 198.51.100.8/30 stands for the Google APIs range (private.googleapis.com): Private Google Access,
# on for every subnet Cloud NAT translates, reaches it without NAT.
# `hostnat lab scenario serverless-egress --json` runs this lab and reports the IP per service;
# `hostnat lab scenario vpc-edges --json` adds NAT rules, firewall rules and routes to it.
name: serverless
region: us-central1
networks:
  - name: cloudrun-vpc
    googleApisRange: 198.51.100.8/30
    subnets:
      - { name: cloudrun-direct-subnet, range: 10.9.0.0/24 }
addresses:
  - { name: cloudrun-nat-ip, address: 203.0.113.10 }
routers:
  - name: cloudrun-nat-router
    network: cloudrun-vpc
    nats:
      - name: cloudrun-nat-gateway
        natIps: [cloudrun-nat-ip]
        minPortsPerVm: 512
        logging: ALL
hosts: [host-1, host-2]
instances:
  - { name: vm-1, host: host-1, subnet: cloudrun-direct-subnet, ip: 10.9.0.200 }
connectors:
  - { name: cloudrun-connector, network: cloudrun-vpc, range: 10.8.0.0/28, minInstances: 2, maxInstances: 10 }
services:
  - { name: service-a, connector: cloudrun-connector, egress: all-traffic }
  - { name: service-b, connector: cloudrun-connector, egress: all-traffic }
  - { name: service-c, connector: cloudrun-connector, egress: all-traffic }
  - { name: nat-test-private, connector: cloudrun-connector, egress: private-ranges-only }
  - { name: my-api-service, instances: 2, network: cloudrun-vpc, subnet: cloudrun-direct-subnet, egress: all-traffic }
servers:
  - { ip: 192.0.2.10, services: [udp-echo, tcp-echo, icmp-echo, whoami] }
  - { ip: 192.0.2.20, services: [udp-echo, tcp-echo, icmp-echo, whoami] }
  - { ip: 192.0.2.30, services: [stun, whoami, icmp-echo, filtering-probe] }
  - { ip: 198.51.100.8, services: [whoami, udp-echo] }
"""#

extension Topology {
  /// The seed's Cloud Run walkthrough (deploy/lab/serverless.yaml).
  public static var serverless: Topology {
    // The embedded text is checked by a test; a failure here is a build defect.
    try! parse(yaml: serverlessTopologyYAML)
  }
}
