"""De-identification of DICOM by the PS3.15 Annex E Basic Application Level Confidentiality Profile.

Every DICOM object sarcoscope hands out de-identified goes through `deidentify_dataset`: the web app's
"Download selected DICOM", `sarcoscope deidentify`, and the source headers a de-identified DICOM SEG (or SR)
is built from, so that derived objects carry the pseudonym and reference the remapped UIDs.

Which library: the attribute table comes from **dicom-anonymizer** (KitwareMedical), which ships the
standard's Table E.1-1 per DICOM edition as data (tag -> action code D, Z, X, U, Z/D, X/Z, X/D, X/Z/D,
X/Z/U*; ~650 attributes including the 50xx/60xx repeating groups). The other candidates apply less of it:
*dicognito* replaces names, IDs, UIDs, dates and addresses with fake values from its own list (descriptors
such as ProtocolName, SeriesDescription or ReasonForStudy are kept), and *deid* (pydicom) applies a recipe
that its user writes (its default recipe removes ~70 attributes), so the table would be ours to maintain.
dicom-anonymizer's own engine is not used as is: it applies the table to the top-level data set only (a
kept sequence is not cleaned inside), replaces UIDs with random UIDs from a process-wide dict (not
reproducible, grows forever in a server) and dates with 00010101. So this package walks the data set itself
and applies the library's table at every nesting level, with the library's VR-conforming dummy values for
D, and with our keyed replacements:

- PatientID and PatientName become one pseudonym, and every UID with action U (and every UID the table
  does not list, but for published identifiers: SOP classes, transfer syntaxes, coding schemes...) becomes
  `2.25.<int>`, both by HMAC-SHA256 keyed with the installation's secret: the same patient gets the same
  pseudonym in every study, the same UID always maps to the same UID (a SEG still references its CT), and
  nothing can be reversed or brute-forced without the key (an unsalted hash of an 8-digit ID can).
- Options (`DeidentificationPolicy`): Retain Longitudinal Temporal Information with Modified Dates (every
  date in the table moved by a per-patient offset of whole days, derived from the key; times of day kept),
  Retain Patient Characteristics (age, sex, size, weight: SMI and BMI need them).
- Sequences: X removes; Z empties; D keeps one empty item (a dummy: the content may be identifying);
  X/Z/U* and sequences outside the table are kept and cleaned inside. Private attributes are removed.
- Code Meaning is outside the table, but free text in a local coding scheme can name a patient: a meaning
  whose scheme is not a standard one (pydicom's code dictionary, plus legacy SRT) is replaced by its code.
- Pixel data is never changed: an image with burned-in annotation (BurnedInAnnotation YES, or missing on a
  secondary capture / screen save) is refused unless the policy accepts it, and then it is marked
  PatientIdentityRemoved NO with a loud warning.
- An encapsulated document (PDF, CDA, STL...) is refused: its text names the patient where the profile
  cannot reach (the table puts a dummy in place of the document and keeps its DocumentTitle).

Every result carries PatientIdentityRemoved, DeidentificationMethod (text) and
DeidentificationMethodCodeSequence (CID 7050: 113100 and the option codes).

The modules, by concern: `policy` (the key, the options, the method recorded), `profile` (the table applied
to one data set: `deidentify_dataset`), `refusals` (burned-in annotation, encapsulated documents), `files`
(a DICOM file, folder or zip: `deidentify_file`, `deidentify_tree`) and `messages` (warnings and errors fit
for a de-identified output).
"""
