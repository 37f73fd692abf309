ruleset io.picolabs.pico-engine-ui {
  meta {
    name "pico-engine-ui"
    description <<
      p2pico's version of the ruleset behind pico-engine's developer UI. The UI
      talks to a pico only through its "engine,ui" channel: the queries box,
      pico, uiECI, name, testingECI and logs, and the engine_ui events below.
      Every pico the UI makes gets this ruleset too.
    >>
    version "1.0.0"
    shares box, uiECI, pico, logs, testingECI, name
  }

  global {
    ui_rid = "io.picolabs.pico-engine-ui"
    wrangler_rid = "io.picolabs.wrangler"

    // The id of this pico's "engine,ui" channel (null until engine_ui:setup made it).
    uiECI = function() {
      ctx:channels
        .filter(function(c) { c{"tags"}.sort().join(",") == "engine,ui" })
        .map(function(c) { c{"id"} })
        .head()
    }

    name = function() {
      ent:name || "Pico"
    }

    testingECI = function() {
      ent:testingECI
    }

    // The UI eci of a child, by the family eci ctx:children gives. A child reports it
    // once its engine_ui:setup ran (rule remember_child_ui_eci); until then a child this
    // ruleset (or wrangler) just made is asked directly. Other children (made by
    // ctx:newPico elsewhere, without this ruleset) are left out rather than asked, so
    // one of them can never make box() or pico() fail.
    childUiEci = function(familyEci) {
      known = ent:child_ui_ecis{familyEci};
      waiting = ent:new_children{familyEci};
      known => known | waiting => ctx:query(familyEci, ui_rid, "uiECI") | null
    }

    childUiEcis = function() {
      ctx:children.map(childUiEci).filter(function(eci) { eci })
    }

    box = function() {
      {
        "eci": uiECI(),
        "parent": ent:parent_ui_eci,
        "children": childUiEcis(),
        "name": name(),
        "backgroundColor": ent:backgroundColor || "#87cefa",
        "x": ent:x || 100,
        "y": ent:y || 100,
        "width": ent:width || 100,
        "height": ent:height || 100
      }
    }

    pico = function() {
      {
        "eci": uiECI(),
        "parent": ent:parent_ui_eci,
        "children": childUiEcis(),
        "channels": ctx:channels,
        "rulesets": ctx:rulesets
      }
    }

    // The Logging tab: ctx:logs() grouped by transaction, newest first, each with its
    // lines as "time [LEVEL] message".  (p2pico logs KRL's log statements, klog and
    // failures; pico-engine also logs each step of a transaction.)
    logs = function() {
      byTxn = ctx:logs().collect(function(e) { e{"txnId"} || "" });
      byTxn.keys()
        .map(function(txnId) {
          entries = byTxn{txnId};
          first = entries.head();
          {
            "txnId": txnId,
            "time": first{"time"},
            "header": [first{"rid"}, first{"msg"}].filter(function(x) { x }).join(" "),
            "entries": entries.map(function(e) {
              e{"time"}.split("T")[1] + " [" + e{"level"}.uc() + "] " + e{"msg"}
            })
          }
        })
        .sort(function(a, b) { b{"time"} cmp a{"time"} })
    }

    installed = function(rid) {
      ctx:rulesets.any(function(r) { r{"rid"} == rid })
    }

    // How this ruleset is installed here, so a new child gets the same: its URL, or
    // its source when it was installed from source.
    selfForChild = function() {
      me = ctx:rulesets.filter(function(r) { r{"rid"} == ui_rid }).head();
      {"url": me{"url"} || me{["meta", "krl"]}, "config": me{"config"} || {}}
    }

    familyEciOf = function(uiEci) {
      ctx:children.filter(function(familyEci) { childUiEci(familyEci) == uiEci }).head()
    }

    // The "engine,ui" channel's policies: what pico-engine 1.4's UI sends and asks.
    uiEvents = [
      {"domain": "engine_ui", "name": "setup"},
      {"domain": "engine_ui", "name": "box"},
      {"domain": "engine_ui", "name": "new"},
      {"domain": "engine_ui", "name": "del"},
      {"domain": "engine_ui", "name": "install"},
      {"domain": "engine_ui", "name": "uninstall"},
      {"domain": "engine_ui", "name": "flush"},
      {"domain": "engine_ui", "name": "new_channel"},
      {"domain": "engine_ui", "name": "del_channel"},
      {"domain": "engine_ui", "name": "testing_eci"},
      {"domain": "engine", "name": "started"},
      {"domain": "wrangler", "name": "subscription"},
      {"domain": "wrangler", "name": "pending_subscription_approval"},
      {"domain": "wrangler", "name": "inbound_rejection"},
      {"domain": "wrangler", "name": "outbound_cancellation"},
      {"domain": "wrangler", "name": "subscription_cancellation"}
    ]
    uiQueries = [
      {"rid": "*", "name": "__testing"},
      {"rid": ui_rid, "name": "uiECI"},
      {"rid": ui_rid, "name": "box"},
      {"rid": ui_rid, "name": "pico"},
      {"rid": ui_rid, "name": "logs"},
      {"rid": ui_rid, "name": "testingECI"},
      {"rid": ui_rid, "name": "name"},
      {"rid": "io.picolabs.subscription", "name": "established"},
      {"rid": "io.picolabs.subscription", "name": "inbound"},
      {"rid": "io.picolabs.subscription", "name": "outbound"},
      {"rid": "io.picolabs.subscription", "name": "wellKnown_Rx"}
    ]
  }

  // Make (or bring up to date) the "engine,ui" channel.
  rule setup {
    select when engine_ui setup
    ctx:upsertChannel(
      tags = ["engine", "ui"],
      eventPolicy = {"allow": uiEvents, "deny": []},
      queryPolicy = {"allow": uiQueries, "deny": []}
    )
  }

  // A child tells its parent its UI eci, through its own family channel.
  rule report_to_parent {
    select when engine_ui setup
    pre {
      uiEci = uiECI()
      familyEci = ctx:channels
        .filter(function(c) { c{"tags"}.sort().join(",") == "child,system" })
        .map(function(c) { c{"id"} })
        .head()
    }
    if ctx:parent && uiEci && familyEci then
      event:send({
        "eci": ctx:parent,
        "domain": "engine_ui",
        "type": "child_ui_eci",
        "attrs": {"eci": familyEci, "uiEci": uiEci}
      })
  }

  rule remember_child_ui_eci {
    select when engine_ui child_ui_eci or wrangler new_child_created
    pre {
      familyEci = event:attrs{"eci"}
      uiEci = event:attrs{"uiEci"}
      mine = familyEci && ctx:children >< familyEci
    }
    if mine && uiEci then noop()
    fired {
      ent:child_ui_ecis{[familyEci]} := uiEci;
      clear ent:new_children{[familyEci]}
    } else {
      // wrangler made it but could not learn its UI eci: ask the child until it reports
      ent:new_children{[familyEci]} := true if mine
    }
  }

  rule box {
    select when engine_ui box
    pre {
      color = function(v) {
        c = v.as("String");
        c.match(re#^\#[0-9a-f]{6}$#i) => c | ent:backgroundColor
      }
    }
    always {
      ent:x := event:attrs{"x"}.as("Number") if event:attrs{"x"};
      ent:y := event:attrs{"y"}.as("Number") if event:attrs{"y"};
      ent:width := event:attrs{"width"}.as("Number") if event:attrs{"width"};
      ent:height := event:attrs{"height"}.as("Number") if event:attrs{"height"};
      ent:name := event:attrs{"name"}.as("String") if event:attrs{"name"};
      ent:backgroundColor := color(event:attrs{"backgroundColor"}) if event:attrs{"backgroundColor"};
      ent:parent_ui_eci := event:attrs{"parentUiEci"} if event:attrs{"parentUiEci"}
    }
  }

  // With wrangler installed it makes the child (and installs its own rulesets there);
  // without it, this rule does: a child with this ruleset, set up and boxed.
  rule new {
    select when engine_ui new
    pre {
      name = event:attrs{"name"} || ent:name
      backgroundColor = event:attrs{"backgroundColor"} || ent:backgroundColor
    }
    if not installed(wrangler_rid) then every {
      ctx:newPico(rulesets = [selfForChild()]) setting(newEci)
      ctx:event(eci = newEci, domain = "engine_ui", name = "setup", attrs = {})
      ctx:event(
        eci = newEci,
        domain = "engine_ui",
        name = "box",
        attrs = {"name": name, "backgroundColor": backgroundColor, "parentUiEci": uiECI()}
      )
    }
    fired {
      ent:new_children{[newEci]} := true
    } else {
      raise wrangler event "new_child_request" attributes
        event:attrs.put("name", name).put("backgroundColor", backgroundColor)
    }
  }

  rule del {
    select when engine_ui del
    pre {
      delEci = familyEciOf(event:attrs{"eci"})
    }
    ctx:delPico(delEci)
    fired {
      clear ent:child_ui_ecis{[delEci]};
      clear ent:new_children{[delEci]}
    }
  }

  // url is a file:// URL (inside the node's ruleset folders) or the KRL source itself.
  rule install {
    select when engine_ui install
    pre {
      given = event:attrs{"config"}
      config = given.typeof() == "String" => given.decode() | given
    }
    if not installed(wrangler_rid) then
      ctx:install(url = event:attrs{"url"}, config = config.typeof() == "Map" => config | {})
    notfired {
      raise wrangler event "install_ruleset_request" attributes event:attrs
    }
  }

  rule uninstall {
    select when engine_ui uninstall
    ctx:uninstall(rid = event:attrs{"rid"})
  }

  // Read the URL again and reinstall what this pico installed from it (its entity
  // variables stay). A ruleset's source lives in the pico's state, so a flush is per pico.
  rule flush {
    select when engine_ui flush
    foreach ctx:rulesets.filter(function(r) { r{"url"} && r{"url"} == event:attrs{"url"} })
      setting(rs)
    ctx:install(url = rs{"url"}, config = rs{"config"} || {})
  }

  rule new_channel {
    select when engine_ui new_channel
    ctx:newChannel(
      tags = event:attrs{"tags"},
      eventPolicy = event:attrs{"eventPolicy"},
      queryPolicy = event:attrs{"queryPolicy"}
    )
  }

  rule del_channel {
    select when engine_ui del_channel
    ctx:delChannel(event:attrs{"eci"})
  }

  rule testing_eci {
    select when engine_ui testing_eci
    always {
      ent:testingECI := event:attrs{"eci"}
    }
  }
}
