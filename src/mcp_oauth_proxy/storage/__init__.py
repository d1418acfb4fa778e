"""Store backends: :mod:`.memory` and :mod:`.sql`, and the key ring that
encrypts upstream secrets at rest (:mod:`.crypto`)."""
