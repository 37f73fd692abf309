ruleset OpenWest2018.kiosk {
  meta {
    name "OpenWest 2018 game: kiosk"
    description <<
      The booth's kiosk pico, on its own engine. Touching the screen
      (kiosk:next_tag) asks the game pico, through the kiosk channel the game
      operator gave it (kiosk:game_channel), for the next sign-up tag; the kiosk's
      display shows the tag's URL as a QR code. Written for p2pico.
    >>
    author "p2pico"
    shares current, kiosk_page
  }

  global {
    current = function() { ent:current }

    kiosk_page = function() {
      tag = ent:current;
      <<<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>OpenWest 2018 sign-up</title></head>
<body style="font-family:sans-serif;text-align:center">
<h1>Scan to join the connections game</h1>
#{tag.isnull() => "<p>Touch the screen for a sign-up code</p>"
  | "<p id=\"tag\">" + tag{"id"} + "</p><p><a id=\"url\" href=\"" + tag{"url"} + "\">sign up</a></p>"}
</body></html>
>>
    }
  }

  rule game_channel {
    select when kiosk game_channel
      eci re#^(.+)$#
      setting(eci)
    fired {
      ent:game_eci := eci
    }
  }

  rule next_tag {
    select when kiosk next_tag
    if ent:game_eci then every {
      ctx:eventQuery(eci = ent:game_eci, domain = "ids", name = "need_next", attrs = {},
        rid = "OpenWest2018.keys", queryName = "issued") setting(tag)
      send_directive("sign-up tag", tag)
    }
    fired {
      ent:current := tag
    }
  }
}
