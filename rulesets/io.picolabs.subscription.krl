ruleset io.picolabs.subscription {
  meta {
    name "Subscription"
    description <<
      Subscriptions between picos (Tx/Rx), written for p2pico with the events,
      attributes and functions of pico-engine 1.4's subscription ruleset.
      The two picos may run on different engines: every ECI is routed across
      the mesh, before and after either pico moves, so no host is needed.
    >>
    author "p2pico"
    use module io.picolabs.wrangler alias wrangler
    provides established, outbound, inbound, wellKnown_Rx, autoAcceptConfig
    shares established, outbound, inbound, wellKnown_Rx, autoAcceptConfig
  }

  global {
    __testing = {
      "queries": __testing{"queries"}.map(function(q) { q.delete("args") }),
      "events": [
        {"domain": "wrangler", "name": "subscription",
         "attrs": ["wellKnown_Tx", "Rx_role", "Tx_role", "name", "channel_type", "Tx_host", "password"]},
        {"domain": "wrangler", "name": "subscription",
         "attrs": ["wellKnown_Tx", "Rx_role", "Tx_role", "name", "channel_type", "password"]},
        {"domain": "wrangler", "name": "subscription", "attrs": ["wellKnown_Tx", "password"]},
        {"domain": "wrangler", "name": "subscription", "attrs": ["wellKnown_Tx"]},
        {"domain": "wrangler", "name": "pending_subscription_approval", "attrs": ["Id"]},
        {"domain": "wrangler", "name": "subscription_cancellation", "attrs": ["Id"]},
        {"domain": "wrangler", "name": "inbound_rejection", "attrs": ["Id"]},
        {"domain": "wrangler", "name": "outbound_cancellation", "attrs": ["Id"]},
        {"domain": "wrangler", "name": "autoAcceptConfigUpdate",
         "attrs": ["configName", "password", "regexMap", "delete"]},
        {"domain": "wrangler", "name": "intent_to_delete", "attrs": ["Id"]}
      ]
    }

    // A subscription ("bus") as this pico keeps it:
    //   Id            shared by both sides
    //   Rx            my channel: the other side sends to it
    //   Tx            the other side's channel: I send to it
    //   Rx_role       my role; Tx_role the other side's
    //   wellKnown_Tx  the other side's wellKnown_Rx, only while my request is pending
    // ent:outbound holds the requests I made, ent:inbound those I received, and
    // ent:established the subscriptions both sides approved.
    //
    // Tx_host: p2pico routes ECIs across engines, so a bus never records a host
    // and events go to the Tx channel without one. A Tx_host attribute is
    // accepted and ignored; bus{"Tx_host"} reads null, which event:send accepts.

    open_events = {"allow": [{"domain": "*", "name": "*"}], "deny": []}
    open_queries = {"allow": [{"rid": "*", "name": "*"}], "deny": []}
    wellKnown_events = {
      "allow": [
        {"domain": "wrangler", "name": "subscription"},
        {"domain": "wrangler", "name": "new_subscription_request"},
        {"domain": "wrangler", "name": "inbound_removal"}
      ],
      "deny": []
    }
    wellKnown_queries = {"allow": [{"rid": meta:rid, "name": "wellKnown_Rx"}], "deny": []}

    // The buses whose `key` equals `value`; every bus when either is missing.
    buses_where = function(buses, key, value) {
      all = buses.defaultsTo([]);
      key && value => all.filter(function(b) { b{key} == value }) | all
    }

    established = function(key, value) {
      buses_where(ent:established, key, value)
    }

    outbound = function(key, value) {
      buses_where(ent:outbound, key, value)
    }

    inbound = function(key, value) {
      buses_where(ent:inbound, key, value)
    }

    wellKnown_Rx = function() {
      wrangler:channels(["wellKnown_Rx", "Tx_Rx"]).head()
    }

    autoAcceptConfig = function() {
      ent:autoAcceptConfig.defaultsTo({})
    }

    // Where the bus with this Id sits in the list (-1 when it is not there).
    position_of = function(buses, Id) {
      buses.map(function(b) { b{"Id"} }).index(Id)
    }

    // The bus an event is about: by its Id, else its Rx, else its Tx, else the
    // bus whose Rx is the channel the event came in on.
    bus_of_event = function(buses) {
      pick = function(key, value) { buses.filter(function(b) { b{key} == value }).head() };
      event:attr("Id") => pick("Id", event:attr("Id"))
        | event:attr("Rx") => pick("Rx", event:attr("Rx"))
        | event:attr("Tx") => pick("Tx", event:attr("Tx"))
        | pick("Rx", meta:eci)
    }

    // The start of a bus from a request's attributes: roles (when given) and an Id.
    new_bus = function() {
      roles = event:attr("Rx_role")
        => {"Rx_role": event:attr("Rx_role"), "Tx_role": event:attr("Tx_role")}
        | {};
      roles.put("Id", event:attr("Id") || random:uuid())
    }

    // Does any entry of this auto-accept config match the event's attributes?
    // An entry maps an attribute name to a list of regular expressions (strings).
    config_matches = function(config) {
      entries = config{"entries"}.defaultsTo({});
      entries.keys().any(function(attr_name) {
        value = event:attr(attr_name);
        patterns = entries{attr_name}.defaultsTo([]);
        not value.isnull() && patterns.any(function(p) { value.as("String").match(p.as("RegExp")) })
      })
    }

    // The event's attributes for another pico: without the HTTP request's headers
    // (pico-engine passes them on; they may carry a caller's credentials).
    outgoing = function() {
      event:attrs.delete("_headers")
    }

    // Attributes that name bus lists: not passed along once a bulk cancel fans out.
    bulk_keys = ["establishedIDs", "inboundIDs", "outboundIDs"]

    without_bulk = function(attrs) {
      bulk_keys.reduce(function(a, k) { a.delete(k) }, attrs)
    }
  }

  // -- the wellKnown_Rx channel ---------------------------------------------

  rule initialize {
    select when wrangler ruleset_installed where event:attr("rids") >< meta:rid
    if wellKnown_Rx().isnull() then noop()
    fired {
      raise wrangler event "need_wellKnown_Rx" attributes event:attrs
    }
  }

  rule create_wellKnown_Rx {
    select when wrangler need_wellKnown_Rx
    ctx:newChannel(["wellKnown_Rx", "Tx_Rx"], wellKnown_events, wellKnown_queries)
    fired {
      raise wrangler event "wellKnown_Rx_created" attributes event:attrs
    }
  }

  // A pico that got this ruleset without wrangler:ruleset_installed (the node's
  // root pico) makes its channel when the engine starts.
  rule create_root_pico_wellKnown_Rx {
    select when engine started
    if wellKnown_Rx().isnull() then noop()
    fired {
      raise wrangler event "need_wellKnown_Rx" attributes event:attrs
    }
  }

  // -- bulk teardown ----------------------------------------------------------

  rule register_for_cleanup {
    select when wrangler ruleset_added where event:attr("rids") >< meta:rid
    always {
      raise wrangler event "ruleset_needs_cleanup_period" attributes {"domain": meta:rid}
    }
  }

  rule cleanup_subscriptions {
    select when wrangler rulesets_need_to_cleanup
    always {
      raise wrangler event "cancel_subscriptions" attributes event:attrs
    }
  }

  rule cancel_all_subscriptions {
    select when wrangler cancel_subscriptions
    pre {
      ids = function(buses) { buses.defaultsTo([]).map(function(b) { b{"Id"} }) }
    }
    always {
      raise wrangler event "cancel_relationships" attributes event:attrs
        .put("establishedIDs", ids(ent:established))
        .put("inboundIDs", ids(ent:inbound))
        .put("outboundIDs", ids(ent:outbound))
    }
  }

  rule cancel_established {
    select when wrangler cancel_relationships
    foreach event:attr("establishedIDs").defaultsTo([]) setting(Id)
    always {
      raise wrangler event "subscription_cancellation"
        attributes without_bulk(event:attrs).put("Id", Id)
    }
  }

  rule cancel_inbound {
    select when wrangler cancel_relationships
    foreach event:attr("inboundIDs").defaultsTo([]) setting(Id)
    always {
      raise wrangler event "inbound_rejection" attributes without_bulk(event:attrs).put("Id", Id)
    }
  }

  rule cancel_outbound {
    select when wrangler cancel_relationships
    foreach event:attr("outboundIDs").defaultsTo([]) setting(Id)
    always {
      raise wrangler event "outbound_cancellation"
        attributes without_bulk(event:attrs).put("Id", Id)
    }
  }

  // -- the handshake: A asks B ------------------------------------------------

  // 1. A: wrangler:subscription {wellKnown_Tx: B's wellKnown_Rx, Rx_role, Tx_role, name?, channel_type?}
  rule createRxBus {
    select when wrangler subscription
    pre {
      channel_name = event:attr("name").defaultsTo(random:word())
      channel_type = event:attr("channel_type").defaultsTo("Tx_Rx")
      wellKnown_Tx = event:attr("wellKnown_Tx")
      pending = new_bus().put("wellKnown_Tx", wellKnown_Tx)
    }
    if wellKnown_Tx then
      ctx:newChannel([channel_name, channel_type], open_events, open_queries) setting(channel)
    fired {
      bus = pending.put("Rx", channel{"id"})
      announced = bus.put({"channel_name": channel_name, "channel_type": channel_type})
      ent:outbound := outbound().append(bus)
      raise wrangler event "subscription_request_needed" attributes event:attrs.put(announced)
      raise wrangler event "outbound_pending_subscription_added" attributes event:attrs.put(announced)
    } else {
      raise wrangler event "wellKnown_Tx_format_failure" attributes event:attrs
    }
  }

  // 2. A sends the request to B's wellKnown_Rx, from B's point of view.
  rule requestSubscription {
    select when wrangler subscription_request_needed
    event:send({
      "eci": event:attr("wellKnown_Tx"),
      "domain": "wrangler",
      "type": "new_subscription_request",
      "attrs": outgoing().delete("Tx_host").put({
        "Rx_role": event:attr("Tx_role"),
        "Tx_role": event:attr("Rx_role"),
        "Tx": event:attr("Rx")
      })
    })
  }

  // 3. B: a pending inbound subscription, with its own Rx channel.
  rule addInboundPendingSubscription {
    select when wrangler new_subscription_request
    pre {
      Tx = event:attr("Tx")
      pending = new_bus().put("Tx", Tx)
    }
    if Tx then
      ctx:newChannel(
        [event:attr("channel_name"), event:attr("channel_type")], open_events, open_queries
      ) setting(channel)
    fired {
      ent:inbound := inbound().append(pending.put("Rx", channel{"id"}))
      raise wrangler event "inbound_pending_subscription_added"
        attributes event:attrs.put("Rx", channel{"id"})
    } else {
      raise wrangler event "no_Tx_failure" attributes event:attrs
    }
  }

  // 4. B approves (its owner, or autoAccept): tell A which channel to use.
  rule approveInboundPendingSubscription {
    select when wrangler pending_subscription_approval
    pre {
      bus = bus_of_event(inbound())
    }
    if bus then
      event:send({
        "eci": bus{"Tx"},
        "domain": "wrangler",
        "type": "outbound_pending_subscription_approved",
        "attrs": outgoing().put({"Id": bus{"Id"}, "Tx": bus{"Rx"}})
      })
    fired {
      raise wrangler event "inbound_pending_subscription_approved"
        attributes event:attrs.put("Id", bus{"Id"}).put("bus", bus)
    }
  }

  // 5. A: the approved request becomes established.
  rule addOutboundSubscription {
    select when wrangler outbound_pending_subscription_approved
    pre {
      pending = outbound()
      bus = bus_of_event(pending).put("Tx", event:attr("Tx")).delete("wellKnown_Tx")
      at = position_of(pending, bus{"Id"})
    }
    if at >= 0 then noop()
    fired {
      ent:established := established().append(bus)
      ent:outbound := pending.splice(at, 1)
      raise wrangler event "subscription_added" attributes event:attrs.put("bus", bus)
    }
  }

  // 6. B: the approved request becomes established.
  rule addInboundSubscription {
    select when wrangler inbound_pending_subscription_approved
    pre {
      pending = inbound()
      at = position_of(pending, event:attr("Id"))
    }
    if at >= 0 then noop()
    fired {
      ent:established := established().append(event:attr("bus"))
      ent:inbound := pending.splice(at, 1)
      raise wrangler event "subscription_added" attributes event:attrs
    }
  }

  // -- ending a subscription ------------------------------------------------

  // Either side of an established subscription.
  rule cancelEstablished {
    select when wrangler subscription_cancellation
    pre {
      bus = bus_of_event(established())
    }
    if bus then
      event:send({
        "eci": bus{"Tx"},
        "domain": "wrangler",
        "type": "established_removal",
        "attrs": outgoing().put({"Rx": bus{"Tx"}, "Tx": bus{"Rx"}, "Id": bus{"Id"}})
      })
    fired {
      raise wrangler event "established_removal" attributes event:attrs.put("Id", bus{"Id"})
    }
  }

  rule removeEstablished {
    select when wrangler established_removal
    pre {
      buses = established()
      bus = bus_of_event(buses)
      at = position_of(buses, bus{"Id"})
    }
    if at >= 0 then wrangler:deleteChannel(bus{"Rx"})
    fired {
      ent:established := buses.splice(at, 1)
      raise wrangler event "subscription_removed" attributes event:attrs.put("bus", bus)
    }
  }

  // B turns down a pending request.
  rule cancelInbound {
    select when wrangler inbound_rejection
    pre {
      bus = bus_of_event(inbound())
    }
    if bus then
      event:send({
        "eci": bus{"Tx"},
        "domain": "wrangler",
        "type": "outbound_removal",
        "attrs": outgoing().put("Id", bus{"Id"})
      })
    always {
      raise wrangler event "inbound_removal" attributes event:attrs.put("Id", bus{"Id"})
    }
  }

  rule removeInbound {
    select when wrangler inbound_removal
    pre {
      buses = inbound()
      bus = bus_of_event(buses)
      at = position_of(buses, bus{"Id"})
    }
    if at >= 0 then wrangler:deleteChannel(bus{"Rx"})
    fired {
      ent:inbound := buses.splice(at, 1)
      raise wrangler event "inbound_subscription_cancelled" attributes event:attrs.put("bus", bus)
    }
  }

  // A withdraws its pending request.
  rule cancelOutbound {
    select when wrangler outbound_cancellation
    pre {
      bus = bus_of_event(outbound())
    }
    if bus then
      event:send({
        "eci": bus{"wellKnown_Tx"},
        "domain": "wrangler",
        "type": "inbound_removal",
        "attrs": outgoing().put({"Id": bus{"Id"}, "Tx": bus{"Rx"}})
      })
    always {
      raise wrangler event "outbound_removal" attributes event:attrs.put("Id", bus{"Id"})
    }
  }

  rule removeOutbound {
    select when wrangler outbound_removal
    pre {
      buses = outbound()
      bus = bus_of_event(buses)
      at = position_of(buses, bus{"Id"})
    }
    if at >= 0 then wrangler:deleteChannel(bus{"Rx"})
    fired {
      ent:outbound := buses.splice(at, 1)
      raise wrangler event "outbound_subscription_cancelled" attributes event:attrs.put("bus", bus)
    }
  }

  // -- sending on subscriptions -------------------------------------------------

  // {subID | Tx_role | Rx_role, domain, type, attrs}: send to every matching
  // established subscription.
  rule sendEventToSubCheck {
    select when wrangler send_event_on_subs
    pre {
      subID = event:attr("subID")
      Tx_role = event:attr("Tx_role")
      Rx_role = event:attr("Rx_role")
      subs = (subID => established("Id", subID) | [])
        .append(Tx_role => established("Tx_role", Tx_role) | [])
        .append(Rx_role => established("Rx_role", Rx_role) | [])
      ready = subs.length() > 0 && event:attr("domain") && event:attr("type")
    }
    if ready then noop()
    fired {
      raise wrangler event "send_event_to_subs" attributes event:attrs.put("subs", subs)
    } else {
      raise wrangler event "failed_to_send_event_to_sub" attributes event:attrs.put({
        "foundSubsToSendTo": subs.length() > 0,
        "domainGiven": event:attr("domain").as("Boolean"),
        "typeGiven": event:attr("type").as("Boolean")
      })
    }
  }

  rule send_event_to_subs {
    select when wrangler send_event_to_subs
    foreach event:attr("subs") setting(sub)
    event:send({
      "eci": sub{"Tx"},
      "domain": event:attr("domain"),
      "type": event:attr("type"),
      "attrs": event:attr("attrs").defaultsTo({})
    })
  }

  // -- auto-accept ----------------------------------------------------------------

  rule autoAccept {
    select when wrangler inbound_pending_subscription_added
    if autoAcceptConfig().values().any(config_matches) then noop()
    fired {
      raise wrangler event "pending_subscription_approval" attributes event:attrs
      raise wrangler event "auto_accepted_subscription_request" attributes event:attrs
    }
  }

  // {config: {configName, password, entries}} or {configName, password,
  // regexMap: JSON text of the entries, delete}: add, replace or delete one
  // named config. (As in pico-engine, the password is kept and not checked.)
  rule autoAcceptConfigUpdate {
    select when wrangler autoAcceptConfigUpdate
    pre {
      given = event:attr("config").defaultsTo({
        "configName": event:attr("configName"),
        "password": event:attr("password"),
        "entries": event:attr("regexMap").decode()
      })
      config_name = given{"configName"}
      configs = autoAcceptConfig()
    }
    if config_name then noop()
    fired {
      ent:autoAcceptConfig := event:attr("delete")
        => configs.delete(config_name)
        | configs.put(config_name, given)
      raise wrangler event "auto_accept_config_updated" attributes event:attrs
    } else {
      raise wrangler event "autoAcceptConfigUpdate_failure" attributes event:attrs
    }
  }

  rule prepare_to_delete {
    select when wrangler intent_to_delete
      Id re#^(.+)$#
      setting(Id)
    if established("Id", Id).length() > 0 then noop()
    fired {
      raise wrangler event "subscription_cancellation" attributes event:attrs
      raise wrangler event "ready_for_deletion"
    }
  }
}
