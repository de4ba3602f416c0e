"""The hospital network shell: DICOMweb (QIDO-RS search, WADO-RS retrieve, STOW-RS store) and the DICOM node
(`sarcoscope listen`, a C-STORE receiver). Like web/ and batch/, it reads through imaging/, analyses through
`pipeline.analyze` and writes through export/."""
