"""A presence document as one watcher may see it (RFC 5025 §3.3 transformations).

What a `View` keeps of a `PresenceDoc`:

- tuples (services, §3.3.2): all with all-services; else those whose id is an occurrence-id,
  whose <contact> is a service-uri or has a service-uri-scheme; none without
  provide-services (an absent permission provides nothing). A kept tuple keeps its basic
  status, contact, priority and timestamp; its notes need provide-note, its RPID activities
  provide-activities;
- persons (§3.3.3): all with all-persons, else by occurrence-id; activities need
  provide-activities, moods provide-mood, notes provide-note;
- presentity notes: provide-note;
- devices (§3.3.4): the model has no <dm:device> elements; what a device gives away here is
  the registrar's tuple contact (the registered device's IP:port), kept only when the view
  says `contacts` (provide-devices granted, or [pa] expose_contacts); otherwise the tuple's
  contact is the presentity's own AOR (sip:alice@example.com), which routes through the
  proxy like the device's would and keeps LPIDF/XPIDF watchers (whose status is the contact
  line) informed;
- polite-block (`offline`): the closed document, whatever the real state (§3.2.1).
"""

from __future__ import annotations

from presenced.pa.model import Person, PresenceDoc, Tuple
from presenced.pa.packages.presence import closed_doc, presentity_tuple_id
from presenced.pa.policy.evaluate import View
from presenced.pa.policy.rules import Provide


def _service_kept(t: Tuple, p: Provide) -> bool:
    if p.all or t.id in p.occurrences:
        return True
    if t.contact is None:
        return False
    return t.contact in p.uris or t.contact.partition(":")[0].lower() in p.schemes


def _keeps_all(doc: PresenceDoc, view: View, registrar_id: str) -> bool:
    """Whether `view` leaves `doc` as it is: every attribute, service and person provided,
    and no registered contact to hide."""
    if not view.all_attributes or view.services is None or not view.services.all:
        return False
    if doc.persons and (view.persons is None or not view.persons.all):
        return False
    return view.contacts or not any(t.id == registrar_id and t.contact is not None
                                    for t in doc.tuples)


def apply_view(doc: PresenceDoc, view: View, presentity: str) -> PresenceDoc:
    if view.offline:
        return closed_doc(presentity)
    attrs = view.attributes
    notes = view.all_attributes or "provide-note" in attrs
    if not doc.tuples and not doc.persons and (notes or not doc.notes):
        return doc  # nothing a view could leave out (an unregistered user's closed document)
    registrar_id = presentity_tuple_id(presentity)
    if _keeps_all(doc, view, registrar_id):
        return doc  # the default view of a document without a device address: no copy
    activities = view.all_attributes or "provide-activities" in attrs
    moods = view.all_attributes or "provide-mood" in attrs
    aor_uri = f"sip:{presentity}"
    tuples: list[Tuple] = []
    if view.services is not None:
        for t in doc.tuples:
            if not _service_kept(t, view.services):
                continue
            hide_contact = t.id == registrar_id and t.contact is not None and not view.contacts
            tuples.append(Tuple(
                t.id, t.basic,
                aor_uri if hide_contact else t.contact,
                t.priority,
                t.notes if notes else (),
                t.timestamp,
                t.activities if activities else (),
            ))
    persons: list[Person] = []
    if view.persons is not None:
        pp = view.persons
        for p in doc.persons:
            if pp.all or p.id in pp.occurrences:
                persons.append(Person(p.id, p.activities if activities else (),
                                      p.moods if moods else (), p.notes if notes else (),
                                      p.timestamp))
    return PresenceDoc(doc.entity, tuple(tuples), tuple(persons), doc.notes if notes else ())
