ruleset io.p2pico.counter {
  meta {
    name "Counter"
    description <<
      Counts counter:inc events. The attribute "by" (default 1) is added to
      ent:count, and the new value comes back in a "count" directive.
    >>
    shares count
  }

  global {
    // The current count; 0 before the first increment.
    count = function() {
      ent:count.defaultsTo(0)
    }
  }

  rule increment {
    select when counter inc
    pre {
      step = event:attr("by").defaultsTo(1).as("Number")
      // not count(): pico-engine's parser reads `count` in an expression as the
      // event aggregator keyword, and this ruleset must run there unchanged
      total = ent:count.defaultsTo(0) + step
    }
    send_directive("count", {"count": total})
    fired {
      ent:count := total
    }
  }

  rule reset {
    select when counter reset
    send_directive("count", {"count": 0})
    fired {
      clear ent:count
    }
  }
}
