"""pyoops.fields"""
