"""diffroar: remove-and-retrain (DiffROAR) evaluation of attribution methods.

One module per pipeline stage (data, train, saliency, mask, retrain, metrics, localization,
figures), each called by the rule of the same name through workflow/scripts/.
"""
